"""Shared defaults of every pkd_jax experiment; the per-experiment files override a few fields.

`get_config(stage, dataset)` returns an unlocked ConfigDict; experiment files lock it. Every field has a
one-line comment. Defaults follow the paper's text, except for the gate (below); the released code's
choices are one config argument away (`:released_code`, see `apply_released_code`).

The gate's defaults, and why they differ from a literal reading of the paper:

The paper's text (eq. 5-7) gates each training sequence on gamma = 1 - CCC(teacher, labels) of that
sequence and gives no value for theta; the released code uses theta = 0.2 with gamma over the whole
batch. CCC over a clip of 5-8 frames of smooth labels is near 0 for any predictor: on real RECOLA gold
standards a teacher with whole-video CCC 0.96 reaches gamma <= 0.2 in 1% of 5- and 8-frame windows and
55% of 250-frame ones, so the literal gate is inert (`gate_context="clip"` keeps it). The defaults were
chosen on the demo corpus's dev split (`python -m pkd_jax.experiments.gate_sweep
--config=configs/gate_sweep.py`, seeds 0-2, docs/training.md "Choosing the gate"): gamma over 250 frames (10 s)
centred on the clip, and theta at the 0.75 quantile of the teacher's gamma over the training clips, the
best mean dev CCC of the grid (every gated variant was within seed noise of the others). An absolute
theta (set theta_quantile = 0) makes sense once a teacher is good enough for windows to pass it.
"""

from __future__ import annotations

import ml_collections

STAGES = ("teacher", "visual", "student")
DATASETS = ("recola", "synthetic", "affwild2")  # corpus layouts `data.dataset` names


def get_config(stage: str, dataset: str = "recola") -> ml_collections.ConfigDict:
    """Defaults of one training stage ("teacher", "visual" or "student") on `dataset`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    c = ml_collections.ConfigDict()
    c.stage = stage  # what to train: "teacher" (audio+visual), "visual" (baseline) or "student" (PKD)
    c.seed = 0  # seeds parameter init, dropout and the clip stream
    c.targets = ("valence", "arousal")  # predicted dimensions; one name trains one model per dimension

    c.data = d = ml_collections.ConfigDict()  # corpus, cache and batches
    d.dataset = dataset  # corpus layout: "recola", "synthetic" (RECOLA layout) or "affwild2"
    d.root = ""  # raw corpus directory (required; no silent fallback to synthetic data)
    d.cache = ""  # feature cache directory; empty: <root>/pkd_jax_cache, preprocessed on first use
    d.preprocess_workers = 2  # processes for preprocessing when the cache is built
    d.face_size = 112  # face crop side in pixels
    d.face_detector = "haar"  # cache's face detector: "haar" (OpenCV) or "mtcnn" (the paper's, JAX)
    d.detector_weights = ""  # mtcnn: the .npz of `python -m pkd_jax.weights import --arch=mtcnn`
    d.face_align = "none"  # crops: "none" (square around the box) or "landmarks" (5-point, needs mtcnn)
    d.clip_frames = 5  # frames per training clip (the paper's text gives none; the released code uses 5)
    d.batch_size = 8  # clips per step, over all devices and processes
    d.missing_face = "retain"  # frames without a face: "retain" the last face (Table 5) or "black"
    d.audio_window_s = 1.0  # audio context per frame, centred on it (paper: 1-second windows)
    d.augment = False  # random flip and brightness/contrast jitter per clip
    d.eval_chunk_frames = 250  # evaluation chunk length; the recurrent state carries across chunks
    d.eval_videos_per_batch = 4  # videos evaluated side by side
    d.window_subsequences = 0  # strong setting: sub-sequences (time steps) per window; 0: clips (weak)
    d.subsequence_frames = 32  # strong setting: frames per sub-sequence; clip_frames of them are sampled
    d.eval_windows_per_batch = 4  # strong setting: evaluation windows per batch
    d.physio_window_s = 8.0  # physio teachers: seconds of physiological features per frame, centred on it
    d.physio_window_step = 5  # physio teachers: frames between a window's samples (5: 5 Hz)
    # Training recordings with gold-standard labels; () = all. Teachers and baselines train on these only;
    # students add clips of the others for the distillation term alone (docs/training.md "Controls")
    d.labelled_recordings = ()  # training recording ids that have labels; () = every training recording
    d.unlabelled_batch_size = 0  # a student's clips of unlabelled recordings per step, 0 = batch_size

    c.model = m = ml_collections.ConfigDict()  # network sizes (RECOLA, weak setting)
    m.vgg_width = 1.0  # VGG19-BN channel multiplier (1.0 = the paper's network)
    m.visual_features = 512  # VGG trunk output (linear 4608 -> 512)
    m.cnn_dropout = 0.2  # dropout before and after the trunk's linear layer
    m.rnn = "gru"  # temporal layer: "gru" (weak setting) or "lstm"
    m.rnn_hidden = 1024  # recurrent state size
    m.head_features = (512, 256, 128, 64)  # student head widths (released code)
    m.embed_index = 2  # which student head layer is the distilled embedding (128-d)
    m.audio_width = 1.0  # ResNet-18 channel multiplier
    m.fusion_visual_features = 1024  # teacher: linear on the recurrent output before concatenation
    m.fused_features = (256, 128)  # teacher: layers after concatenation; the last is the embedding
    m.activation = "relu"  # between head layers: "relu" (paper text) or "none" (released code)
    m.visual_trunk = "vgg19_bn"  # visual trunk: "vgg19_bn" per frame (weak) or "r3d18" per clip (strong)
    m.r3d_width = 1.0  # R3D-18 channel multiplier (1.0 = torchvision's r3d_18)
    m.fusion = "concat"  # teacher fusion: "concat" (weak setting) or "jca" (joint cross-attention, strong)
    m.jca_dim = 128  # JCA: d', the size audio and visual features are projected to
    m.jca_k = 32  # JCA: k, the attention's hidden size
    m.jca_hidden = 128  # JCA: regressor hidden layer (2d' -> jca_hidden -> targets)
    m.jca_dropout = 0.6  # JCA: dropout before the regressor's output layer
    m.jca_embedding = "hidden"  # JCA teacher's embedding: "hidden" (regressor layer) or "attended" (2d')
    m.teacher_modalities = ("audio", "visual")  # teacher's streams: visual with "audio", "physio" or both
    m.physio_width = 32  # physio encoder: channels of its first 1-D convolution (the second has twice)
    m.physio_features = 128  # physio encoder: output size, the physiological stream's features in fusion
    m.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (params stay float32)
    # Frozen trunks (docs/training.md "Frozen trunks"): inference mode (running BN statistics, no dropout),
    # never updated; only the recurrent layer and heads train. The paper trains VGG19-BN at lr 1e-6.
    m.freeze_visual_cnn = False  # freeze the visual trunk (VGG19-BN with its linear layer, or R3D-18)
    m.freeze_audio_cnn = False  # freeze the teacher's audio trunk (ResNet-18)
    m.frozen_features = "cached"  # frozen trunks' features: "cached" once per corpus and weights, or "online"
    m.frozen_bn_calibration_frames = 512  # a frozen trunk's untrained BN statistics: from this many inputs

    c.optim = o = ml_collections.ConfigDict()  # Adam with one learning rate per module group
    o.lr_visual_cnn = 1e-6  # VGG19-BN trunk (paper text; released code 1e-5)
    o.lr_temporal = 1e-4  # GRU / LSTM
    o.lr_head = 1e-4  # heads and fusion
    o.lr_audio_cnn = 1e-5  # ResNet-18 audio trunk (paper text; released code 1e-4)
    o.lr_physio_cnn = 1e-4  # physiological encoder (physio teachers; not in the paper)
    o.b1 = 0.9  # Adam beta1
    o.b2 = 0.999  # Adam beta2
    o.weight_decay = 0.0  # decoupled weight decay (AdamW) when > 0
    o.grad_clip = 0.0  # global gradient-norm clipping when > 0
    o.lr_decay = 1.0  # learning-rate factor at lr_decay_start_epoch and every lr_decay_every_epochs after
    o.lr_decay_start_epoch = 5  # epoch (one pass over the training frames) of the first decay
    o.lr_decay_every_epochs = 2  # epochs between later decays
    o.schedule = "step"  # rate schedule: "step" (the lr_decay* staircase) or "warmup_cosine"
    o.warmup_steps = 0  # warmup_cosine: steps of linear warm-up from 0 to each group's base rate
    o.final_lr_fraction = 0.0  # warmup_cosine: the cosine ends at this fraction of the base rate at num_steps

    c.loss = lo = ml_collections.ConfigDict()  # the loss composed by pkd_jax.losses.compose
    lo.ccc = "flattened"  # CCC reduction: "flattened" over the batch or "per_sequence"
    lo.distill = "per_frame"  # distillation term: "per_frame" cosine, "flattened_cosine" (released code), ...
    lo.gate = "paper"  # negative-transfer gate: "paper", "none" or "released_code"
    lo.alpha = 0.2  # weight of L_cos (eq. 4-7)
    # The gate (see the module docstring): gamma over 10 s of video; distil where the teacher is in its best 75%.
    lo.theta = 0.2  # gate threshold on gamma = 1 - CCC_teacher, used when theta_quantile is 0
    lo.theta_quantile = 0.75  # > 0: theta is this quantile of the teacher's gamma over the training clips
    lo.gate_context = "window"  # where gamma is measured: "window", "clip" (paper text) or "batch" (code)
    lo.gate_window_frames = 250  # gate_context="window": frames of the video, centred on the clip
    lo.custom = ""  # set by the Python API: module:qualname of a user loss; empty for the config's own

    c.teacher = t = ml_collections.ConfigDict()  # the frozen teacher(s) of a student
    t.workdir = ""  # student only: the teacher's workdir (its best checkpoint is used)
    t.checkpoint = ""  # student only: or an explicit checkpoint directory
    t.workdirs = ()  # student only: several teachers' workdirs instead (each with its own gate)
    t.combine = "average"  # several teachers: "average" the trusted teachers' terms, or the "best" per clip
    # "joint" is one-stage: the teacher (model.teacher_modalities) trains in the student's step
    t.mode = "cached"  # "cached": outputs computed once per frame; "online": run in the step; or "joint"
    t.warmup_steps = 0  # mode "joint": steps that train the teacher alone before the student starts
    # A negative control (docs/training.md "Controls"): the cached teacher's outputs moved off their frames
    t.shuffle = "none"  # "none"; "recording": another recording's outputs; "time": shifted half a recording

    c.train = tr = ml_collections.ConfigDict()  # loop length, logging, checkpoints
    tr.num_steps = 20_000  # optimizer steps
    tr.log_every = 50  # steps between metric logs
    tr.eval_every = 1_000  # steps between dev evaluations (and best-checkpoint updates)
    tr.checkpoint_every = 1_000  # steps between "latest" checkpoints
    tr.keep_latest = 1  # latest checkpoints kept
    tr.keep_best = 1  # best-by-dev-CCC checkpoints kept
    tr.profile_steps = ()  # (first, last) step range traced with jax.profiler into <workdir>/profile
    tr.population = 1  # > 1: that many seeds trained together in one program, in <workdir>/seed_<s>
    tr.population_seeds = ()  # the members' seeds; () is seed, seed + 1, ..., seed + population - 1

    c.eval = e = ml_collections.ConfigDict()  # dev evaluation
    e.postprocess = False  # also report the released code's post-processed CCC (labelled as such)
    e.save_predictions = True  # per-video prediction CSVs in <workdir>/predictions/<step>/
    e.score = "mean_over_videos"  # dev score for selection: "mean_over_videos" (RECOLA) or "concatenated"
    e.final_splits = ()  # splits scored once with the final model, e.g. ("test",): eval_<split>.json

    c.pretrained = p = ml_collections.ConfigDict()  # trunk initialisation (the model's init_from fields)
    p.visual_cnn = ""  # VGG19-BN init_from: PyTorch file (FER2013), .npz, or `pkd_jax.weights import` output
    # (with model.visual_trunk="r3d18": a torchvision r3d_18 state dict, e.g. its Kinetics-400 weights)
    p.audio_cnn = ""  # ResNet-18 init_from: PyTorch file (ImageNet; RGB conv1 folded to 1 channel) or .npz
    return c


def apply_released_code(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The released code's choices: its learning rates, linear heads, batch-level gate and cosine."""
    c.model.activation = "none"
    c.optim.lr_visual_cnn = 1e-5
    c.optim.lr_temporal = 1e-4
    c.optim.lr_head = 1e-4
    c.optim.lr_audio_cnn = 1e-4
    c.loss.gate = "released_code"
    c.loss.gate_context = "batch"
    c.loss.theta_quantile = 0.0  # the code's absolute theta = 0.2
    c.loss.distill = "flattened_cosine"
    c.loss.ccc = "flattened"
    c.data.clip_frames = 5
    c.data.batch_size = 8
    return c


def parse_args(arg: str | None, known: tuple[str, ...]) -> set[str]:
    """Config arguments after the colon, comma-separated (`file.py:released_code,tiny`)."""
    args = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = args - set(known)
    if unknown:
        raise ValueError(f"unknown config argument(s) {sorted(unknown)}; known: {list(known)}")
    return args


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny widths for tests and CPU demos: the same code, a fraction of the compute."""
    c.data.face_size = 32
    c.data.clip_frames = 4
    c.data.batch_size = 4
    c.data.eval_chunk_frames = 50
    c.model.vgg_width = 0.0625
    c.model.visual_features = 32
    c.model.rnn_hidden = 32
    c.model.head_features = (32, 24, 16, 8)
    c.model.audio_width = 0.0625
    c.model.fusion_visual_features = 32
    c.model.fused_features = (24, 16)
    c.model.physio_width = 8
    c.model.physio_features = 16
    c.optim.lr_visual_cnn = 1e-3
    c.optim.lr_temporal = 1e-3
    c.optim.lr_head = 1e-3
    c.optim.lr_audio_cnn = 1e-3
    c.optim.lr_physio_cnn = 1e-3
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.data.preprocess_workers = 1
    return c


def stage_config(stage: str, dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """A locked experiment config with the standard arguments: `released_code` and `tiny`."""
    args = parse_args(arg, ("released_code", "tiny"))
    c = get_config(stage, dataset)
    if "released_code" in args:
        apply_released_code(c)
    if "tiny" in args:
        tiny(c)
    c.lock()
    return c


def affwild2(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The strong setting (paper Table 6): R3D-18 + LSTM on 8-frame clips, ResNet-18 on 64 x 107 log-mel,
    joint cross-attention fusion, windows of 8 sub-sequences of 32 frames, Adam 1e-3 everywhere."""
    c.data.dataset = "affwild2"
    c.data.face_size = 112
    c.data.clip_frames = 8
    c.data.window_subsequences = 8
    c.data.subsequence_frames = 32
    c.data.batch_size = 8
    c.data.audio_window_s = 1.07  # 107 log-mel columns of 10 ms per sub-sequence
    c.model.visual_trunk = "r3d18"
    c.model.rnn = "lstm"
    c.model.rnn_hidden = 512
    c.model.fusion = "jca"
    c.model.head_features = (128, 128)  # student: 512 -> 128 (like JCA's d') -> 128 (the embedding)
    c.model.embed_index = 1
    for group in ("visual_cnn", "temporal", "head", "audio_cnn"):
        c.optim[f"lr_{group}"] = 1e-3
    c.optim.lr_decay = 0.8  # x0.8 every 2 epochs from epoch 5 (docs/method.md, Strong setting)
    c.eval.score = "concatenated"  # Aff-Wild2 reports CCC over all validation frames
    c.teacher.mode = "online"  # random windows: no per-clip-start teacher cache
    return c


def tiny_affwild2(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny widths and windows of the strong setting for tests and CPU demos."""
    tiny(c)
    c.data.face_size = 32
    c.data.clip_frames = 4
    c.data.window_subsequences = 4
    c.data.subsequence_frames = 8
    c.data.batch_size = 2
    c.data.audio_window_s = 0.32
    c.data.eval_windows_per_batch = 4
    c.model.r3d_width = 0.0625
    c.model.rnn_hidden = 16
    c.model.jca_dim = 8
    c.model.jca_k = 4
    c.model.jca_hidden = 8
    c.model.head_features = (8, 8)
    return c


def affwild2_stage_config(stage: str, arg: str | None) -> ml_collections.ConfigDict:
    """A locked strong-setting config of `stage`; argument `tiny` shrinks it."""
    args = parse_args(arg, ("tiny",))
    c = affwild2(get_config(stage, "affwild2"))
    if "tiny" in args:
        tiny_affwild2(c)
    c.lock()
    return c


def experiment_fields() -> ml_collections.ConfigDict:
    """The paper runner's own fields (`pkd_jax.experiments.paper`)."""
    e = ml_collections.ConfigDict()
    e.seeds = (0, 1, 2, 3, 4)  # every method is trained once per seed; mean +- std and paired t-intervals
    e.corpus_train = 6  # synthetic corpus only: training recordings
    e.corpus_dev = 3  # synthetic corpus only: development recordings
    e.corpus_test = 0  # synthetic corpus only (RECOLA layout): held-out test recordings, with ratings
    e.corpus_seconds = 60.0  # synthetic corpus only: length of each recording
    e.corpus_frame_size = 128  # synthetic corpus only: video frame side in pixels
    e.corpus_seed = 0  # synthetic corpus only: its seed (fixed across method seeds)
    e.figure_video = "dev_1"  # the dev recording drawn in the Figure-4 plot
    e.methods = ("teacher", "teacher_black", "visual", "student", "student_nogate")  # runs per seed
    e.corpus_layout = "recola"  # synthetic corpus only: "recola" or "affwild2" layout
    e.corpus_physio = True  # synthetic corpus only (RECOLA layout): ECG and EDA recordings too
    e.population = 1  # > 1: each method's seeds train together, in populations of up to this many; 0: auto
    # (`pkd_jax.experiments.pretrain`: the synthetic corpus's stand-in for the paper's FER2013 VGG19.)
    e.pretrain = p = ml_collections.ConfigDict()  # trunks pretrained on a separate synthetic face set, frozen
    p.visual = False  # pretrain the trunk on the face set and freeze it (cached features) in every method
    p.audio = False  # with visual: also the audio trunk (a teacher's, next to the frozen visual trunk)
    p.recordings = 6  # face-set recordings it trains on (another corpus seed: identities seen nowhere else)
    p.dev_recordings = 2  # face-set recordings its own dev score is measured on
    p.seed = 1000  # the face set's corpus seed (must differ from corpus_seed)
    p.steps = 1500  # optimizer steps, single frames
    p.batch_size = 32  # frames per step
    p.lr = 1e-3  # learning rate of the trunk, its recurrent layer and head
    return e
