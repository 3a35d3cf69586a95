"""A science check of the distillation pipeline: does a student learn privileged knowledge from a teacher?

A tiny world, in seconds. Each recording has a smooth latent state z(t) (two channels, Ornstein-
Uhlenbeck). The student sees only a noisy view of it, frame features x(t) (the camera); the teacher's
embedding e(t) is an exact linear image of z(t) and its prediction follows the label z_0(t) (it had the
privileged modality). On some recordings the teacher is wrong: its embedding and prediction there are
unrelated noise, which its own CCC against the labels shows, so the paper's gate should switch
distillation off there.

The student is the library's `Student` network (recurrent layer and head on cached trunk features) trained
by the library's train step (`make_train_step`, cached teacher mode) and loss (`pkd_jax.losses.compose`
with the per-frame cosine term and the paper's gate per clip), on clips drawn by the library's input
pipeline (`FrameReader`, which aligns each clip with its teacher outputs by clip start). It gets no
supervised term: all it can learn comes from the teacher. Its score is the mean per-frame cosine between
its embedding and the real teacher's on held-out recordings, each centred on its recording's mean.

`check(seed)` trains it twice, from the real teacher and from the teacher's outputs moved to another
recording (`teacher.shuffle="recording"`'s derangement), and returns both scores and their margin. The
planted defects of `DEFECTS` (teacher outputs shifted in time, the distillation term's sign flipped, the
gate inverted) each must bring the margin to about 0 or below: `tests/test_science.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pkd_jax import losses
from pkd_jax.data.pipeline import FrameReader, PipelineConfig
from pkd_jax.losses.gates import GateWeights, gate_paper
from pkd_jax.models import Student
from pkd_jax.precompute.teacher_shuffle import shuffle_rows
from pkd_jax.train.state import create_state
from pkd_jax.train.steps import make_train_step, teacher_key

DEFECTS = ("misaligned", "sign_flipped", "gate_inverted")
# Clips of 32 frames span ~10 time constants of the latent (TAU), so a wrong or misaligned teacher
# rarely agrees with the labels on a clip by chance (CCC >= 1 - THETA), and the gate does not let it in.
# Six latent channels in 16 dimensions: an untrained student's embedding, some linear image of the
# latent, then lines up with the teacher's only by a small chance (cosine ~ 0.1, not ~ 0.3 as with two).
LATENT, FEATURES, EMBED, CLIP, TAU, ALPHA, THETA = 6, 16, 16, 32, 3.0, 0.5, 0.3


@dataclasses.dataclass(frozen=True)
class World:
    """Per-recording arrays of the tiny world: frame features, labels and the teacher's outputs."""

    features: dict[str, np.ndarray]  # [T, FEATURES]: the student's view
    labels: dict[str, np.ndarray]  # [T, 1]
    teacher_emb: dict[str, np.ndarray]  # [T, EMBED], per frame
    teacher_pred: dict[str, np.ndarray]  # [T, 1]
    train: tuple[str, ...]
    held_out: tuple[str, ...]


def _smooth(rng: np.random.Generator, n: int, dims: int, tau: float) -> np.ndarray:
    """Unit-variance smooth noise [n, dims] (AR(1) twice)."""
    phi = np.exp(-1.0 / tau)
    x = rng.standard_normal((n + 200, dims))
    for _ in range(2):
        for t in range(1, len(x)):
            x[t] = phi * x[t - 1] + np.sqrt(1 - phi * phi) * x[t]
    x = x[200:] - x[200:].mean(0)
    return x / x.std(0)


def make_world(
    seed: int, *, recordings: int = 6, wrong: int = 2, held_out: int = 2, frames: int = 300
) -> World:
    """`recordings` training recordings (the last `wrong` with a wrong teacher) and `held_out` ones."""
    rng = np.random.default_rng(seed)
    mix_view, mix_teacher = rng.standard_normal((LATENT, FEATURES)), rng.standard_normal((LATENT, EMBED))
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in ("features", "labels", "emb", "pred")}
    ids = [f"train_{i}" for i in range(recordings)] + [f"dev_{i}" for i in range(held_out)]
    for k, vid in enumerate(ids):
        z = _smooth(rng, frames, LATENT, tau=TAU)
        out["features"][vid] = (z @ mix_view + 0.5 * rng.standard_normal((frames, FEATURES))).astype(
            np.float32
        )
        out["labels"][vid] = z[:, :1].astype(np.float32)
        if recordings - wrong <= k < recordings:  # the teacher is wrong here, and its CCC says so
            noise = _smooth(rng, frames, LATENT, tau=TAU)
            out["emb"][vid] = (noise @ mix_teacher).astype(np.float32)
            out["pred"][vid] = noise[:, :1].astype(np.float32)
        else:
            out["emb"][vid] = (z @ mix_teacher).astype(np.float32)
            out["pred"][vid] = z[:, :1].astype(np.float32)
    return World(out["features"], out["labels"], out["emb"], out["pred"], tuple(ids[:recordings]),
                 tuple(ids[recordings:]))  # fmt: skip


class _Videos:
    """The slice of `Cache` that `FrameReader` reads for a clip: labels, masks, no pixels."""

    def __init__(self, world: World):
        self.world = world

    def video(self, video_id: str) -> Any:
        labels = self.world.labels[video_id]
        n = len(labels)
        return dataclasses.make_dataclass(
            "V", ["video_id", "labels", "label_mask", "face_found", "num_frames"]
        )(video_id, labels, np.ones(n, bool), np.ones(n, bool), n)


def per_clip(per_frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-frame arrays as the teacher cache stores them: [S, CLIP, ...], one row per clip start."""
    return {
        v: np.moveaxis(np.lib.stride_tricks.sliding_window_view(x, CLIP, axis=0), -1, 1).copy()
        for v, x in per_frame.items()
    }


def _batches(world: World, teacher: dict[str, dict[str, np.ndarray]], seed: int, size: int = 16):
    """Clips of the training recordings through the library's reader, teacher outputs by clip start."""
    reader = FrameReader(
        _Videos(world),  # type: ignore[arg-type]
        PipelineConfig(clip_frames=CLIP, with_frames=False, with_audio=False),
        extra_arrays={
            teacher_key("teacher_emb", 0): teacher["emb"],
            teacher_key("teacher_pred", 0): teacher["pred"],
        },
        frame_arrays={"visual_features": {v: world.features[v] for v in world.train}},
    )
    rng = np.random.default_rng(seed)
    while True:
        clips = []
        for _ in range(size):
            vid = world.train[rng.integers(len(world.train))]
            start = rng.integers(len(world.labels[vid]) - CLIP + 1)
            clips.append(reader.read(vid, np.arange(start, start + CLIP)))
        yield {k: np.stack([c[k] for c in clips]) for k in clips[0] if k != "video_id"}


def _inverted_gate(teacher_pred: Any, labels: Any, mask: Any, *, gamma: Any = None) -> GateWeights:
    weights = gate_paper(teacher_pred, labels, mask, alpha=ALPHA, theta=THETA, gamma=gamma)
    return weights._replace(distill=ALPHA - weights.distill, distilled=1.0 - weights.distilled)


def _loss(defect: str | None) -> losses.LossFn:
    """The student's loss: no supervised term, the per-frame cosine term, the paper's gate per clip."""
    cosine = losses.distill_term("per_frame")

    def flipped(outputs: Any, batch: Any) -> Any:
        return -cosine(outputs, batch)

    return losses.compose(
        ccc=lambda outputs, batch: jnp.zeros(()),
        distill=flipped if defect == "sign_flipped" else "per_frame",
        gate=_inverted_gate if defect == "gate_inverted" else "paper",
        alpha=ALPHA,
        theta=THETA,
        gate_context="clip",
    )


def teacher_outputs(world: World, *, shuffled: bool, defect: str | None) -> dict[str, dict[str, np.ndarray]]:
    """Per-clip teacher outputs of the training recordings: real, or moved to another recording
    (`shuffle_rows`, the derangement of `teacher.shuffle="recording"`); `misaligned` shifts the
    embeddings by half a recording in time first (as an off-by-some-frames bug in a cache would)."""
    emb = {v: world.teacher_emb[v] for v in world.train}
    pred = {v: world.teacher_pred[v] for v in world.train}
    if defect == "misaligned":  # the embeddings only: the gate still sees the teacher's aligned predictions
        emb = {v: np.roll(x, len(x) // 2, axis=0) for v, x in emb.items()}
    outputs = {"emb": per_clip(emb), "pred": per_clip(pred)}
    if shuffled:
        frames = {v: len(world.labels[v]) for v in world.train}
        outputs = {k: shuffle_rows(v, "recording", frames) for k, v in outputs.items()}
    return outputs


def student_network() -> Student:
    """The library's student at toy size: recurrent layer and head on cached trunk features."""
    return Student(visual_features=FEATURES, rnn_hidden=32, head_features=(32, EMBED), embed_index=1,
                   num_targets=1, activation="relu", cnn_dropout=0.0)  # fmt: skip


def train_student(world: World, teacher: dict[str, dict[str, np.ndarray]], step: Callable[..., Any],
                  *, seed: int, steps: int) -> Any:  # fmt: skip
    """The student's variables after `steps` of `step` (a jitted train step) on the teacher's outputs."""
    model = student_network()
    variables = model.init(jax.random.key(seed), None, visual_features=jnp.zeros((1, CLIP, FEATURES)))
    state = create_state(dict(variables), OPTIMIZER, jax.random.key(seed))
    batches = _batches(world, teacher, seed)
    for _ in range(steps):
        state, _ = step(state, next(batches), ())
    return {"params": state.params, "batch_stats": state.batch_stats}


OPTIMIZER = optax.adam(1e-2)


def score(model: Student, variables: Any, world: World) -> float:
    """Mean per-frame cosine between the student's and the real teacher's embeddings (each centred on its
    recording's mean), over the held-out recordings."""
    values = []
    for vid in world.held_out:
        _, emb = model.apply(variables, None, visual_features=jnp.asarray(world.features[vid])[None])
        # Centred per recording: what counts is following the teacher over time, not a constant offset.
        s, t = np.asarray(emb)[0], world.teacher_emb[vid]
        s, t = s - s.mean(0), t - t.mean(0)
        cos = np.sum(s * t, -1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1) + 1e-8)
        values.append(float(np.mean(cos)))
    return float(np.mean(values))


@functools.cache
def _train_step(loss_defect: str | None) -> Callable[..., Any]:
    """The jitted train step of a loss, compiled once per process."""
    step = make_train_step(
        student_network(), OPTIMIZER, _loss(loss_defect), targets=(0,), teacher_mode="cached"
    )
    return jax.jit(step)


def check(seed: int = 0, defect: str | None = None, steps: int = 100) -> dict[str, float]:
    """Scores of the students of the real and the shuffled teacher, and the margin real - shuffled."""
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose one of {DEFECTS}")
    world, model = make_world(seed), student_network()
    step = _train_step(defect if defect in ("sign_flipped", "gate_inverted") else None)
    scores = {}
    for name, shuffled in (("real", False), ("shuffled", True)):
        teacher = teacher_outputs(world, shuffled=shuffled, defect=defect)
        scores[name] = score(model, train_student(world, teacher, step, seed=seed, steps=steps), world)
    return {**scores, "margin": scores["real"] - scores["shuffled"]}


def report(seeds: range = range(5)) -> dict[str, list[float]]:
    """The margin of `check` for each seed, without a defect and with each planted one, printed and returned:
    `python -c "from pkd_jax.testing import science; science.report()"`."""
    margins = {}
    for defect in (None, *DEFECTS):
        margins[defect or "none"] = [check(s, defect)["margin"] for s in seeds]
        print(f"{defect or 'none':>14}: margins " + " ".join(f"{m:+.3f}" for m in margins[defect or "none"]))
    return margins
