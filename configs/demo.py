"""The paper on a laptop: tiny networks on the bundled synthetic corpus, a few minutes on a 2-core CPU.

    python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=runs/demo

The same hyper-parameters serve every method (no per-method tuning); the gate's settings come from
`pkd_jax/defaults.py`, chosen on dev by `configs/gate_sweep.py`. Five seeds of teacher, visual-only baseline
and the two students keep `make demo` within 15 minutes on a 2-core CPU; on an accelerator each method's
seeds train as one population, in one program (`experiment.population`, docs/training.md "Populations"). Arguments: `table5` (also the
teacher with black frames for missing faces, Table 5), `smoke` (a seconds-long version for tests, with
every method), `distill` (every distillation term of `pkd_jax.losses` with the paper gate, next to the
cosine student, under the same seeds; with `smoke`, in seconds), `strong` (the strong setting of Table 6 instead: tiny R3D-18 + LSTM and ResNet-18 with
joint cross-attention fusion, on a synthetic corpus in the Aff-Wild2 layout, scored by CCC over all dev
frames concatenated), `frozen` (the fast option for loss research: every stage's visual trunk frozen,
its features computed once per seed and reused by the baseline and every student, docs/training.md
"Frozen trunks"; it combines with the others, e.g. `distill,frozen`), `beyond` (beyond the paper:
teachers of physiological + visual and audio + visual + physiological signals, students of the physio
teacher and of two teachers, and one-stage distillation against two-stage, under the same seeds;
docs/results.md "Beyond the paper"):

    python -m pkd_jax.experiments.paper --config=configs/demo.py:strong --workdir=runs/demo_strong
    python -m pkd_jax.experiments.paper --config=configs/demo.py:distill,frozen --workdir=runs/demo_frozen
    python -m pkd_jax.experiments.paper --config=configs/demo.py:beyond --workdir=runs/demo_beyond
"""

import ml_collections

from pkd_jax import defaults
from pkd_jax.experiments.runner import DISTILL_METHODS

BEYOND_METHODS = (
    "teacher", "teacher_pv", "teacher_apv", "visual", "student", "student_pv", "student_two",
    "student_nogate", "student_onestage",
)  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = defaults.parse_args(arg, ("smoke", "strong", "table5", "distill", "frozen", "beyond"))
    if "strong" in args:
        return _frozen(_strong("smoke" in args), "frozen" in args)
    c = defaults.get_config("teacher", "synthetic")
    defaults.tiny(c)
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

    c.experiment = e = defaults.experiment_fields()
    e.corpus_test = 3  # held-out test recordings: the headline scores, dev stays for reference
    e.methods = ("teacher", "visual", "student", "student_nogate")  # Tables 1 and 4
    # Auto: each method's seeds as one population on an accelerator; one after another on a CPU, where
    # that is faster (docs/benchmarks.md, "Populations"). --config.experiment.population=5 forces them.
    e.population = 0
    if {"distill", "beyond", "frozen"} & set(args):
        e.population = 1  # their documented numbers come from seeds trained one after another
    if "table5" in args:
        e.methods = ("teacher", "teacher_black", "visual", "student", "student_nogate")  # + Table 5
    if "distill" in args:  # every distillation term of pkd_jax.losses, paper gate, the same paired seeds
        e.methods = ("teacher", "visual", "student", *(f"student_{t}" for t in DISTILL_METHODS))
    if "smoke" in args:
        e.methods = ("teacher", "teacher_black", "visual", "student", "student_nogate")
        if "distill" in args:
            e.methods = ("teacher", "visual", "student", *(f"student_{t}" for t in DISTILL_METHODS))
        e.seeds = (0,)
        e.corpus_train, e.corpus_dev, e.corpus_seconds = 2, 1, 8.0
        e.corpus_test = 1
        e.corpus_physio = (
            "beyond" in args
        )  # only the physio teachers read it; preprocessing is quicker without
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 4
        c.data.eval_chunk_frames = 100
    if "beyond" in args:  # physio teachers, two teachers, one-stage (their references first)
        e.methods = BEYOND_METHODS
    c.lock()
    return _frozen(c, "frozen" in args)


def _frozen(c: ml_collections.ConfigDict, frozen: bool) -> ml_collections.ConfigDict:
    """With `frozen`: the visual trunk of every stage frozen at its initialisation, features cached. The
    teacher's audio trunk still trains, so the privileged modality stays learned."""
    if frozen:
        c.unlock()
        c.model.freeze_visual_cnn = True  # inference-mode trunk: running BN statistics, no fine-tuning
        c.model.frozen_features = "cached"  # computed once per seed, shared by every stage of that seed
        c.lock()
    return c


def _strong(smoke: bool) -> ml_collections.ConfigDict:
    """The strong setting at demo size: windows of 8 sub-sequences of 8 frames, 4 of them per clip."""
    c = defaults.affwild2(defaults.get_config("teacher", "affwild2"))
    defaults.tiny_affwild2(c)
    c.data.face_size = 40  # enough pixels for the synthetic mouth and brow expressions
    c.data.window_subsequences = 8  # JCA over 8 time steps, as in the paper
    c.data.subsequence_frames = 8  # 8 x 8 = 64-frame (2.6 s) windows
    c.data.clip_frames = 4  # frames of each sub-sequence fed to R3D-18
    c.data.audio_window_s = 1.07  # one 64 x 107 log-mel window per sub-sequence, as in the paper
    c.data.batch_size = 4  # windows per step
    c.data.eval_windows_per_batch = 8  # evaluation windows per batch
    c.data.preprocess_workers = 2  # both cores
    c.model.rnn_hidden = 32  # LSTM state
    c.model.jca_dim, c.model.jca_k, c.model.jca_hidden = 16, 8, 16  # d', k and the regressor's hidden layer
    c.model.head_features = (16, 16)  # student head; its second layer matches the JCA embedding (16)
    c.train.num_steps = 300  # optimizer steps per run
    c.train.log_every = 50  # steps between metric logs
    c.train.eval_every = 300  # one dev evaluation, at the end (no model selection on dev)
    c.train.checkpoint_every = 300  # steps between checkpoints
    c.eval.save_predictions = True  # needed for the Figure-4 plot

    c.experiment = e = defaults.experiment_fields()
    e.seeds = (0,)  # one seed keeps the demo to a few minutes
    e.methods = ("teacher", "visual", "student", "student_nogate")  # Table 6 and the gate ablation
    e.corpus_layout = "affwild2"  # generate the synthetic corpus in the Aff-Wild2 layout
    e.corpus_train, e.corpus_dev, e.corpus_seconds = 4, 2, 30.0  # the last train recording is a pair
    if smoke:
        e.corpus_train, e.corpus_dev, e.corpus_seconds = 1, 1, 4.0
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 4
    c.lock()
    return c
