"""A visual trunk pretrained on a separate synthetic face-expression set, like the paper's FER2013 VGG19.

The paper's VGG19-BN starts from FER2013 weights and is fine-tuned at lr 1e-6, i.e. nearly frozen. On the
synthetic corpus the same role is played by a trunk trained here, once per experiment, on a face set of
its own: recordings drawn with another corpus seed (`experiment.pretrain.seed`), so no identity,
background or emotion trajectory of the train, dev or test splits is in it. Its labels are the
expression each frame shows (the latent valence and arousal, no annotator lag, no annotation noise), and
each example is a single frame (`data.clip_frames = 1`), as a face-expression dataset's images are.

    <workdir>/pretrain/corpus/          the face set (RECOLA layout, `pretrain_*` ids not used elsewhere)
    <workdir>/pretrain/cache/           its preprocessed face crops
    <workdir>/pretrain/run/             the visual network trained on it (a normal workdir)
    <workdir>/pretrain/visual_cnn.npz   its trunk, in the format `config.pretrained.visual_cnn` reads

With `experiment.pretrain.audio` the audio trunk (the paper's ImageNet ResNet-18, fine-tuned at lr
1e-5) gets the same treatment: a teacher trained on the face set's speech next to the frozen pretrained
visual trunk (`<workdir>/pretrain/run_audio/`, `audio_cnn.npz`), so it learns what the voice adds.

Every method of the experiment then loads these files and freezes the trunks (`model.freeze_*_cnn`,
cached features): their features are computed once for the whole experiment, since every seed shares
the same trunks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from pkd_jax import console


def face_set_config(corpus_config: Any) -> Any:
    """The generator settings of the face set: those of the corpus, with labels that are the expression
    shown in the frame (no annotator lag or noise) and no physiology."""
    return dataclasses.replace(corpus_config, annotator_lag_s=0.0, annotator_noise_sd=0.0, physio=False)


def trunk_config(
    base: ml_collections.ConfigDict, directory: Path, group: str, visual_trunk: Path | None = None
) -> ml_collections.ConfigDict:
    """The training config that pretrains trunk `group` on single frames of the face set: the visual
    stage for `visual_cnn`; for `audio_cnn` a teacher whose visual trunk is the pretrained one, frozen."""
    p = base.experiment.pretrain
    config = ml_collections.ConfigDict(base.to_dict())
    del config["experiment"]
    config.stage = "visual" if group == "visual_cnn" else "teacher"
    config.seed = p.seed
    config.data.root = str(directory / "corpus")
    config.data.cache = str(directory / "cache")
    config.data.clip_frames = 1  # one frame per example, like a face-expression image set
    # The corpus's labelled subset names corpus recordings; every face-set recording is labelled.
    config.data.labelled_recordings = ()
    config.data.batch_size = p.batch_size
    config.model.freeze_visual_cnn = group == "audio_cnn"
    config.model.freeze_audio_cnn = False
    config.model.frozen_features = "cached"
    config.pretrained.visual_cnn = str(visual_trunk) if group == "audio_cnn" else ""
    config.pretrained.audio_cnn = ""
    for rate in ("lr_visual_cnn", "lr_audio_cnn", "lr_temporal", "lr_head"):
        config.optim[rate] = p.lr
    # Its own schedule, whatever the experiment's: warm-up, then cosine decay to 0 at the last step.
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = max(1, p.steps // 20)
    config.optim.final_lr_fraction = 0.0
    config.optim.lr_decay = 1.0
    config.train.num_steps = p.steps
    config.train.eval_every = p.steps
    config.train.checkpoint_every = p.steps
    config.train.log_every = max(1, p.steps // 20)
    config.train.population = 1
    config.eval.final_splits = ()
    config.eval.save_predictions = False
    return config


def pretrain_trunks(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Path]:
    """Generates and preprocesses the face set, pretrains the visual trunk (and with
    `experiment.pretrain.audio` the audio trunk) on it and writes their weights files, reusing whatever
    a previous call left finished. Returns `{group: weights file}`."""
    e = config.experiment
    p = e.pretrain
    directory = workdir / "pretrain"
    if p.seed == e.corpus_seed:
        raise ValueError(
            f"experiment.pretrain.seed={p.seed} equals experiment.corpus_seed: the face set would repeat "
            "the corpus's recordings; choose another seed"
        )
    groups = ("visual_cnn", "audio_cnn") if p.audio else ("visual_cnn",)
    files = {g: directory / f"{g}.npz" for g in groups}
    if all(f.is_file() for f in files.values()):
        console.say(f"Reusing the pretrained trunks {', '.join(str(f) for f in files.values())}.")
        return files
    _generate_face_set(config, directory)
    for group, out in files.items():
        if out.is_file():
            continue
        train_config = trunk_config(config, directory, group, files["visual_cnn"])
        run_dir = directory / ("run" if group == "visual_cnn" else "run_audio")
        _train_and_export(train_config, run_dir, group, out)
    return files


def _generate_face_set(config: ml_collections.ConfigDict, directory: Path) -> None:
    from pkd_jax.data import synthetic
    from pkd_jax.train.feature_cache import open_feature_cache

    e, p = config.experiment, config.experiment.pretrain
    corpus = directory / "corpus"
    if not (corpus / "synthetic.json").is_file():
        console.say(f"Generating the face set for pretraining the trunks in {corpus}.")
        generator = synthetic.SyntheticConfig(
            frame_width=e.corpus_frame_size, frame_height=e.corpus_frame_size, physio=False
        )
        synthetic.generate_corpus(
            corpus, p.recordings, p.dev_recordings, e.corpus_seconds, p.seed,
            config=face_set_config(generator), workers=config.data.preprocess_workers,
        )  # fmt: skip
    open_feature_cache(trunk_config(config, directory, "visual_cnn"))  # preprocesses on first use


def _train_and_export(config: ml_collections.ConfigDict, run_dir: Path, group: str, out: Path) -> None:
    from pkd_jax.train.loop import run

    p_steps = config.train.num_steps
    console.say(f"Pretraining the {group} trunk on the face set ({config.stage} network, {p_steps} steps).")
    result = run(config, run_dir)
    console.say(
        f"{group} pretraining, dev CCC on the face set (its own task): "
        + ", ".join(f"{t} {v:.3f}" for t, v in result["raw"]["mean_over_videos"].items())
    )
    write_trunk(run_dir, group, out)


def write_trunk(run_dir: Path, group: str, out: Path) -> None:
    """Trunk `group` of the last checkpoint of `run_dir`, as a `config.pretrained.<group>` file."""
    from pkd_jax.api import load
    from pkd_jax.cached import write_atomic
    from pkd_jax.weights.files import save_npz

    trained = load(run_dir, checkpoint=_last_step(run_dir))
    trunk = {
        c: _numpy(trained.variables[c][group])
        for c in ("params", "batch_stats")
        if group in trained.variables.get(c, {})
    }
    write_atomic(out, lambda tmp: save_npz(tmp, trunk))


def _last_step(run_dir: Path) -> int:
    steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    if not steps:
        raise FileNotFoundError(f"{run_dir}: the pretraining run has no checkpoint")
    return max(steps)


def _numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
