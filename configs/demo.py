"""The paper on a laptop: tiny networks on the bundled synthetic corpus, a few minutes on a 2-core CPU.

    python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=runs/demo

The same hyper-parameters serve every method (no per-method tuning). Arguments: `smoke` (a seconds-long
version for tests).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_args(arg, ("smoke",))
    c = common.get_config("teacher", "synthetic")
    common.tiny(c)
    c.data.face_size = 40  # enough pixels for the synthetic mouth and brow expressions
    c.data.clip_frames = 8  # frames per training clip
    c.data.batch_size = 8  # clips per step
    c.data.eval_chunk_frames = 250  # 10 s evaluation chunks
    c.data.eval_videos_per_batch = 3  # all dev videos side by side
    c.data.preprocess_workers = 2  # both cores
    c.train.num_steps = 300  # optimizer steps per run
    c.train.log_every = 25  # steps between metric logs
    c.train.eval_every = 300  # one dev evaluation, at the end (no model selection on dev)
    c.train.checkpoint_every = 300  # steps between checkpoints
    c.eval.save_predictions = True  # needed for the Figure-4 plot

    c.experiment = e = common.experiment_fields()
    if "smoke" in args:
        e.seeds = (0,)
        e.corpus_train, e.corpus_dev, e.corpus_seconds = 2, 1, 8.0
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 4
        c.data.eval_chunk_frames = 100
    c.lock()
    return c
