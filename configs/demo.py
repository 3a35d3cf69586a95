"""The paper on a laptop: tiny networks on the bundled synthetic corpus, trained to convergence, 20
paired seeds, in under 15 minutes on a 2-core CPU.

    python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=runs/demo

Like the paper's VGG19 (FER2013, fine-tuned at lr 1e-6) and ResNet-18 (ImageNet, lr 1e-5), the trunks
are pretrained, here on a separate synthetic face set whose recordings and identities are in no split
(`experiment.pretrain`, `pkd_jax.experiments.pretrain`), then frozen: their features are computed once
and every method trains its recurrent layer, fusion and heads on them, with a warm-up and cosine
learning-rate schedule to the step count chosen on dev (docs/results.md, "Convergence"). Each method's
20 seeds train as one population, one program (docs/training.md "Populations"). The same
hyper-parameters serve every method; the gate's settings come from `pkd_jax/defaults.py`. Scores are
raw CCC of the last step on 9 held-out test recordings, with dev alongside.

Arguments:
- `controls`: the positive and negative controls (docs/results.md "Controls"): labels on three training
  recordings only (`data.labelled_recordings`; teacher and baseline train on those), the students
  distilling on all nine, the ungated student of a teacher shuffled across recordings
  (`teacher.shuffle`), and the pipeline's own positive control: students of a teacher that saw every
  recording's labels (`ALL_LABELS`);
- `table5`: also the teacher with black frames for missing faces (Table 5);
- `distill`: every distillation term of `pkd_jax.losses` with the paper gate, next to the cosine student;
- `beyond`: physiological teachers, two teachers, and one-stage distillation where trunks train
  (`smoke`; not with the pretrained frozen trunks) (docs/results.md "Beyond the paper");
- `frozen`: the trunks frozen at their random initialisation instead of pretrained (loss research on
  fixed random features, docs/training.md "Frozen trunks");
- `strong`: the strong setting of Table 6 instead (tiny R3D-18 + LSTM and ResNet-18 with joint
  cross-attention fusion, Aff-Wild2 layout, trainable trunks, one seed);
- `smoke`: a seconds-long version for tests, with every method and no pretraining.

    python -m pkd_jax.experiments.paper --config=configs/demo.py:controls --workdir=runs/demo_controls
    python -m pkd_jax.experiments.paper --config=configs/demo.py:strong --workdir=runs/demo_strong
"""

import ml_collections

from pkd_jax import defaults
from pkd_jax.experiments.report_labels import ALL_LABELS, BEYOND
from pkd_jax.experiments.runner import DISTILL_METHODS

NUM_STEPS = 600  # chosen on dev from a 1,500-step pilot's curves (docs/results.md, "Convergence")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = defaults.parse_args(arg, ("smoke", "strong", "table5", "distill", "frozen", "beyond", "controls"))
    if "strong" in args:
        return _frozen(_strong("smoke" in args), "frozen" in args)
    c = defaults.get_config("teacher", "synthetic")
    defaults.tiny(c)
    c.data.face_size = 40  # enough pixels for the synthetic mouth and brow expressions
    c.data.clip_frames = 8  # frames per training clip
    c.data.batch_size = 8  # clips per step
    c.data.eval_chunk_frames = 250  # 10 s evaluation chunks
    c.data.eval_videos_per_batch = 9  # every dev (and test) video side by side
    c.data.preprocess_workers = 2  # both cores
    c.optim.schedule = "warmup_cosine"  # linear warm-up, then cosine decay to 0 at the last step
    c.optim.warmup_steps = 50
    c.train.num_steps = NUM_STEPS
    c.train.log_every = 25  # steps between metric logs
    c.train.eval_every = NUM_STEPS // 10  # ten dev evaluations: the learning curves
    c.train.checkpoint_every = NUM_STEPS
    c.train.keep_best = 0  # no model selection on dev: the last step is scored
    c.eval.save_predictions = True  # needed for the Figure-4 plot

    c.experiment = e = defaults.experiment_fields()
    e.seeds = tuple(range(20))  # paired seeds: every method trains once per seed
    # RECOLA's split sizes: 9 recordings each for train, dev (curves, the step count) and held-out test
    # (the headline scores), one minute each.
    e.corpus_train, e.corpus_dev, e.corpus_test = 9, 9, 9
    e.corpus_physio = "beyond" in args  # only the physio teachers read it
    e.methods = ("teacher", "visual", "student", "student_nogate")  # Tables 1 and 4
    e.population = 20  # each method's seeds in one program: on frozen trunks a CPU gains from it too
    e.pretrain.visual = e.pretrain.audio = "frozen" not in args  # pretrained trunks, frozen
    if "table5" in args:
        e.methods = ("teacher", "teacher_black", "visual", "student", "student_nogate")  # + Table 5
    if "distill" in args:  # every distillation term of pkd_jax.losses, paper gate, the same paired seeds
        e.methods = ("teacher", "visual", "student", *(f"student_{t}" for t in DISTILL_METHODS))
    if "controls" in args:  # labels on a third of the training recordings; the shuffled teacher's student
        c.data.labelled_recordings = ("train_1", "train_2", "train_3")
        e.methods = ("teacher", "visual", "student", "student_nogate", "student_shuffled", *ALL_LABELS)
    if "smoke" in args:
        e.methods = ("teacher", "teacher_black", "visual", "student", "student_nogate")
        if "distill" in args:
            e.methods = ("teacher", "visual", "student", *(f"student_{t}" for t in DISTILL_METHODS))
        if "controls" in args:
            e.methods = ("teacher", "visual", "student_nogate", "student_shuffled")
            c.data.labelled_recordings = ("train_1",)
        e.seeds = (0,)
        e.population = 1
        e.pretrain.visual = e.pretrain.audio = False
        e.corpus_train, e.corpus_dev, e.corpus_seconds = 2, 1, 8.0
        e.corpus_test = 1
        c.optim.schedule, c.optim.warmup_steps = "step", 0
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 4
        c.train.keep_best = 1
        c.data.eval_chunk_frames = 100
        c.data.preprocess_workers = 1  # spawning a second process costs more than it saves on a tiny corpus
    if "beyond" in args:  # physio teachers, two teachers, one-stage (their references first)
        # One-stage distillation trains its own teacher in the run, so loading pretrained trunks into it
        # (and caching their features) is not built: it runs where trunks train (`smoke`), not here.
        e.methods = tuple(m for m in BEYOND if m != "student_onestage" or not e.pretrain.visual)
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
