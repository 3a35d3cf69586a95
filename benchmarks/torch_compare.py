"""The train step of pkd_jax side by side with an equivalent PyTorch implementation, on the same batch.

    python benchmarks/torch_compare.py --config=configs/recola_student.py \
        [--kinds=visual,student_cached,teacher] [--batch=2] [--steps=5] [--warmup=2] [--json]

pkd_jax's side is the jitted step of `pkd_jax.bench` (`build_train` on a `random_batch`). The PyTorch
side builds the reference networks of `pkd_jax/testing/torch_reference.py` at the config's sizes, the loss that
`pkd_jax.losses.compose` computes for the config (1 - CCC, the cosine distillation term and its gate),
and Adam with the same per-module learning rates, in `train()` mode with every core. One step is
forward + backward + optimizer update on both sides, input scaling (uint8 -> [0, 1]) included.

After separate warm-ups the timed steps alternate between the frameworks (the order flips every round),
so machine noise hits both alike. Per kind it reports median / min / max seconds of each and
`ratio` = jax median / torch median: <= 1.0 means pkd_jax is at least as fast.

With `--config.model.dtype=bfloat16` pkd_jax computes in bfloat16 (parameters float32) and PyTorch runs
its forward pass and loss under `torch.autocast("cpu", dtype=torch.bfloat16)`, its mixed-precision
counterpart. `--batch` overrides the config's clips per step; `--n_mels` / `--audio_frames` shape the teacher's audio
windows as in `pkd_jax.bench`; `--torch_channels_last` runs the PyTorch convolutions on NHWC tensors
instead of the default NCHW.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import torch
from absl import app, flags
from ml_collections import config_flags

from pkd_jax.config import build
from pkd_jax.perf import train_step as bench
from pkd_jax.provenance import provenance
from pkd_jax.testing.torch_reference import StudentTorch, TeacherTorch
from pkd_jax.train import sharding
from pkd_jax.train.cpu_flags import apply_cpu_flags

DEFAULT_KINDS = ("visual", "student_cached", "teacher")

FLAGS = flags.FLAGS

CCC_EPS = 1e-8  # as pkd_jax.losses
COS_EPS = 1e-6
GATE_OFFSET = 0.2  # the released code's gate offset (pkd_jax.losses.gate_released_code)

TorchLoss = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# The loss of pkd_jax.losses.compose, in PyTorch.


def _ccc_loss(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor, per_sequence: bool) -> torch.Tensor:
    """1 - CCC averaged over targets: a scalar over the flattened batch, or [B] per sequence."""
    w = w[..., None].expand_as(pred)
    dims = (1,) if per_sequence else (0, 1)
    pred, target = torch.where(w > 0, pred, 0.0), torch.where(w > 0, target, 0.0)
    n = w.sum(dims, keepdim=True).clamp_min(1.0)
    mean_p = (w * pred).sum(dims, keepdim=True) / n
    mean_t = (w * target).sum(dims, keepdim=True) / n
    dp, dt = w * (pred - mean_p), w * (target - mean_t)
    var_p = (dp * dp).sum(dims, keepdim=True) / n
    var_t = (dt * dt).sum(dims, keepdim=True) / n
    cov = (dp * dt).sum(dims, keepdim=True) / n
    value = 1.0 - 2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + CCC_EPS)
    if not per_sequence:
        return value.mean()
    has_frames = w.sum(1) > 0  # [B, K]
    return torch.where(has_frames, value.squeeze(1), 0.0).mean(-1)


def _cosine(a: torch.Tensor, b: torch.Tensor, dims: int | tuple[int, ...]) -> torch.Tensor:
    norms = (a * a).sum(dims) * (b * b).sum(dims)
    return (a * b).sum(dims) / norms.clamp_min(COS_EPS * COS_EPS).sqrt()


def _cosine_loss(teacher: torch.Tensor, student: torch.Tensor, w: torch.Tensor, variant: str) -> torch.Tensor:
    """1 - cos(teacher, student): [B] per sequence for "per_frame", one value for "flattened_cosine"."""
    teacher = teacher.detach()
    if variant == "per_frame":
        distance = (1.0 - _cosine(teacher, student, -1)) * w
        return distance.sum(1) / w.sum(1).clamp_min(1.0)
    if variant == "flattened_cosine":
        return 1.0 - _cosine(teacher * w[..., None], student * w[..., None], (0, 1, 2))
    raise ValueError(f"unknown cosine distillation variant {variant!r}")


def _gamma(context: str, teacher_pred: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, batch: dict):
    """gamma = 1 - CCC_teacher over the gate context ("clip", "batch", or "window" from the batch)."""
    if context == "window":
        return batch["gate_gamma"]
    return _ccc_loss(teacher_pred, labels, w, per_sequence=context == "clip")


def _gate(name: str, gamma: torch.Tensor, alpha: float, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(CCC weight, cosine weight) of the gates "none", "paper" and "released_code" given gamma."""
    with torch.no_grad():
        if name == "none":
            return torch.tensor(1.0 - alpha), torch.tensor(alpha)
        if name == "paper":
            trusted = gamma <= theta
            return torch.where(trusted, gamma, 1.0), torch.where(trusted, alpha, 0.0)
        if name == "released_code":
            beta = torch.where((gamma <= theta) | (gamma > 1.0), GATE_OFFSET + gamma, 1.0)
            return 1.0 - beta, beta
    raise ValueError(f"unknown gate {name!r}")


def make_torch_loss(loss: ml_collections.ConfigDict, distill: bool) -> TorchLoss:
    """`loss(outputs, batch) -> scalar` as `pkd_jax.losses.compose` builds it from `config.loss`.

    `outputs` holds `pred`, `emb` and when distilling `teacher_pred`, `teacher_emb`; `batch` holds
    `labels` [B, T, K] and `mask` [B, T] (label mask times frame mask; the cosine uses `frame_mask`).
    """
    if loss.ccc not in ("flattened", "per_sequence"):
        raise ValueError(f"unknown CCC reduction {loss.ccc!r}")
    per_sequence_ccc = loss.ccc == "per_sequence"

    def loss_fn(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask, labels = batch["mask"], batch["labels"]
        seq = (mask.sum(1) > 0).float()  # sequences with a labelled frame are averaged over
        l_ccc = _ccc_loss(outputs["pred"], labels, mask, per_sequence_ccc)
        if distill:
            l_cos = _cosine_loss(outputs["teacher_emb"], outputs["emb"], batch["frame_mask"], loss.distill)
            with torch.no_grad():
                gamma = _gamma(loss.gate_context, outputs["teacher_pred"], labels, mask, batch)
            w_ccc, w_cos = _gate(loss.gate, gamma, loss.alpha, loss.theta)
            value = w_ccc * l_ccc + w_cos * l_cos
        else:
            value = l_ccc
        return (seq * value.expand_as(seq)).sum() / seq.sum().clamp_min(1.0)

    return loss_fn


# ---------------------------------------------------------------------------------------------------
# The PyTorch train step.


def torch_student(config: ml_collections.ConfigDict) -> StudentTorch:
    """The reference Student at the config's sizes."""
    m = config.model
    return StudentTorch(
        vgg_width=m.vgg_width,
        spatial=config.data.face_size // 32,
        visual_features=m.visual_features,
        rnn=m.rnn,
        rnn_hidden=m.rnn_hidden,
        head_features=tuple(m.head_features),
        embed_index=m.embed_index,
        num_targets=len(build.target_indices(config)),
        activation=m.activation,
    )


def torch_teacher(config: ml_collections.ConfigDict) -> TeacherTorch:
    """The reference Teacher at the config's sizes."""
    m = config.model
    return TeacherTorch(
        vgg_width=m.vgg_width,
        spatial=config.data.face_size // 32,
        visual_features=m.visual_features,
        rnn=m.rnn,
        rnn_hidden=m.rnn_hidden,
        audio_width=m.audio_width,
        fusion_visual_features=m.fusion_visual_features,
        fused_features=tuple(m.fused_features),
        num_targets=len(build.target_indices(config)),
        activation=m.activation,
    )


# Parameter-name prefixes of the reference models -> pkd_jax's learning-rate fields (state.LR_FIELDS).
_LR_PREFIXES = (
    ("cnn.", "lr_visual_cnn"),
    ("rnn.rnn.", "lr_temporal"),
    ("rnn.out_layer", "lr_head"),
    ("spec_cnn.", "lr_audio_cnn"),
)


def torch_optimizer(model: torch.nn.Module, optim: ml_collections.ConfigDict) -> torch.optim.Optimizer:
    """Adam (AdamW with weight decay) with pkd_jax's per-module learning rates."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        field = next((f for prefix, f in _LR_PREFIXES if name.startswith(prefix)), None)
        if field is None:
            raise ValueError(f"parameter {name} has no learning-rate group")
        groups.setdefault(field, []).append(param)
    param_groups = [{"params": params, "lr": optim[field]} for field, params in groups.items()]
    betas = (optim.b1, optim.b2)
    if optim.weight_decay > 0:
        return torch.optim.AdamW(param_groups, betas=betas, weight_decay=optim.weight_decay)
    return torch.optim.Adam(param_groups, betas=betas)


class TorchStep:
    """One PyTorch train step of `kind` on a fixed batch (the same arrays pkd_jax's step sees)."""

    def __init__(
        self, config: ml_collections.ConfigDict, kind: str, batch: dict[str, np.ndarray], channels_last: bool
    ):
        torch.manual_seed(0)
        self.kind = kind
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = torch_teacher(config) if kind == "teacher" else torch_student(config)
        self.model.to(memory_format=fmt).train()
        self.grad_clip = config.optim.grad_clip
        self.optimizer = torch_optimizer(self.model, config.optim)
        self.loss_fn = make_torch_loss(config.loss, distill=kind.startswith("student"))
        self.teacher = None
        if kind == "student_online":
            self.teacher = torch_teacher(config).to(memory_format=fmt).eval().requires_grad_(False)

        def nchw(x: np.ndarray) -> torch.Tensor:
            """[B, T, H, W, C] -> [B, T, C, H, W], each [C, H, W] image laid out as `fmt` asks."""
            b, t = x.shape[:2]
            images = torch.from_numpy(np.ascontiguousarray(x)).flatten(0, 1).permute(0, 3, 1, 2)
            return images.contiguous(memory_format=fmt).unflatten(0, (b, t))

        self.frames = nchw(batch["frames"])  # uint8; scaled to [0, 1] inside the step, as in pkd_jax
        self.audio = nchw(batch["audio"]) if "audio" in batch else None
        mask = torch.from_numpy(batch["label_mask"] * batch["frame_mask"])
        self.loss_batch = {
            "labels": torch.from_numpy(batch["labels"][..., list(build.target_indices(config))]),
            "mask": mask,
            "frame_mask": torch.from_numpy(batch["frame_mask"]),
        }
        if "gate_gamma_0" in batch:  # pkd_jax's batch key of teacher 0's gate gamma
            self.loss_batch["gate_gamma"] = torch.from_numpy(batch["gate_gamma_0"])
        self.cached = {}
        if kind == "student_cached":
            self.cached = {k: torch.from_numpy(batch[f"{k}_0"]) for k in ("teacher_pred", "teacher_emb")}
        self.loss = torch.tensor(float("nan"))
        self.autocast = config.model.dtype == "bfloat16"  # PyTorch's mixed precision against jax's bf16

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        frames = self.frames.float().div_(255.0)  # keeps the memory format
        outputs = dict(self.cached)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            if self.teacher is not None:
                with torch.no_grad():
                    outputs["teacher_pred"], outputs["teacher_emb"] = self.teacher(frames, self.audio)
            inputs = (frames, self.audio) if self.kind == "teacher" else (frames,)
            outputs["pred"], outputs["emb"] = self.model(*inputs)
            loss = self.loss_fn({k: v.float() for k, v in outputs.items()}, self.loss_batch)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.loss = loss.detach()


# ---------------------------------------------------------------------------------------------------
# pkd_jax's step and the interleaved measurement.


class JaxStep:
    """pkd_jax's compiled train step of `kind`; each call runs one step to completion."""

    def __init__(self, config: ml_collections.ConfigDict, kind: str, batch: dict[str, np.ndarray]):
        step, self.args = bench.build_train(config, kind, batch, sharding.make_mesh())
        self.params = sum(x.size for x in jax.tree.leaves(self.args[0].params))
        start = time.perf_counter()
        self.compiled = step.lower(*self.args).compile()
        self.compile_s = time.perf_counter() - start
        self.metrics: dict[str, Any] = {}

    def __call__(self) -> None:
        state, self.metrics = self.compiled(*self.args)
        jax.block_until_ready((state, self.metrics))
        self.args = (state, *self.args[1:])  # the state was donated: feed the new one back in

    @property
    def loss(self) -> float:
        return float(self.metrics["loss"]) if self.metrics else float("nan")


def _timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved_times(
    first: Callable[[], None], second: Callable[[], None], *, steps: int, warmup: int
) -> tuple[list[float], list[float]]:
    """`warmup` untimed steps of each (all of `first`'s, then `second`'s), then `steps` timed rounds of
    one step each; the order within a round alternates so neither always runs right after the other."""
    for _ in range(warmup):
        first()
    for _ in range(warmup):
        second()
    times_a, times_b = [], []
    for i in range(steps):
        if i % 2 == 0:
            times_a.append(_timed(first))
            times_b.append(_timed(second))
        else:
            times_b.append(_timed(second))
            times_a.append(_timed(first))
    return times_a, times_b


def _summary(prefix: str, times: list[float], frames: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        f"{prefix}_step_s_median": median,
        f"{prefix}_step_s_min": min(times),
        f"{prefix}_step_s_max": max(times),
        f"{prefix}_frames_per_s": frames / median,
    }


def with_batch_size(config: ml_collections.ConfigDict, batch: int | None) -> ml_collections.ConfigDict:
    """An unlocked copy of `config` with `batch` clips per step (unchanged when None)."""
    c = ml_collections.ConfigDict(config.to_dict())
    if batch is not None:
        if batch < 1:
            raise ValueError(f"--batch={batch}: need at least one clip")
        c.data.batch_size = batch
    return c


def compare(
    config: ml_collections.ConfigDict,
    kinds: list[str],
    *,
    steps: int,
    warmup: int,
    n_mels: int = 64,
    audio_frames: int = 100,
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    """One result dict per step kind: both frameworks' step times and their ratio."""
    unknown = set(kinds) - set(bench.KINDS)
    if unknown:
        raise ValueError(f"unknown step kinds {sorted(unknown)}; choose among {bench.KINDS}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    torch.set_num_threads(os.cpu_count() or 1)
    frames = config.data.batch_size * config.data.clip_frames
    results = []
    for kind in kinds:
        batch = bench.random_batch(config, kind, n_mels=n_mels, audio_frames=audio_frames)
        jax_step = JaxStep(config, kind, batch)
        torch_step = TorchStep(config, kind, batch, channels_last)
        jax_times, torch_times = interleaved_times(jax_step, torch_step, steps=steps, warmup=warmup)
        result = {
            "kind": kind,
            "batch_clips": config.data.batch_size,
            "clip_frames": config.data.clip_frames,
            "face_size": config.data.face_size,
            "dtype": config.model.dtype,
            "steps": steps,
            "warmup": warmup,
            "jax_platform": jax.devices()[0].platform,
            "jax_devices": jax.device_count(),
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "torch_channels_last": channels_last,
            "jax_params": jax_step.params,
            "torch_params": torch_step.num_params(),
            "jax_compile_s": jax_step.compile_s,
            **_summary("jax", jax_times, frames),
            **_summary("torch", torch_times, frames),
            "jax_loss": jax_step.loss,
            "torch_loss": float(torch_step.loss),
        }
        result["ratio"] = result["jax_step_s_median"] / result["torch_step_s_median"]
        results.append(result)
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'kind':16} {'jax median':>10} {'min':>7} {'max':>7} {'torch median':>12} {'min':>7} {'max':>7} "
        f"{'ratio':>6} {'jax compile':>11}"
    )
    rows = [header]
    for r in results:
        rows.append(
            f"{r['kind']:16} {r['jax_step_s_median']:10.3f} {r['jax_step_s_min']:7.3f} "
            f"{r['jax_step_s_max']:7.3f} {r['torch_step_s_median']:12.3f} {r['torch_step_s_min']:7.3f} "
            f"{r['torch_step_s_max']:7.3f} {r['ratio']:6.2f} {r['jax_compile_s']:11.1f}"
        )
    r = results[0] if results else None
    if r:
        rows.append(
            f"(seconds per train step; {r['batch_clips']} clips x {r['clip_frames']} frames at "
            f"{r['face_size']}px, {r['steps']} interleaved steps after {r['warmup']} warm-up; ratio = jax / "
            f"torch median; torch threads {r['torch_threads']})"
        )
    return "\n".join(rows)


def define_flags() -> None:
    """The command-line flags; defined only when run as a program, so imports never clash."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
    flags.DEFINE_list("kinds", list(DEFAULT_KINDS), f"Step kinds among {bench.KINDS}.")
    flags.DEFINE_integer("batch", None, "Clips per step; default: the config's data.batch_size.")
    flags.DEFINE_integer("steps", 5, "Timed steps of each framework.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps of each framework (after compilation).")
    flags.DEFINE_integer("n_mels", 64, "Mel bins of the audio input.")
    flags.DEFINE_integer("audio_frames", 100, "Spectrogram frames per audio window (1 s at 10 ms).")
    flags.DEFINE_bool("json", False, "Print one JSON line per kind instead of a table.")
    flags.DEFINE_bool("torch_channels_last", False, "PyTorch convolutions on channels-last (NHWC) tensors.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    apply_cpu_flags(FLAGS.config.model.dtype)  # pkd_jax's own XLA:CPU flags, as its CLIs set them
    config = with_batch_size(FLAGS.config, FLAGS.batch)
    results = compare(
        config, FLAGS.kinds, steps=FLAGS.steps, warmup=FLAGS.warmup, n_mels=FLAGS.n_mels,
        audio_frames=FLAGS.audio_frames, channels_last=FLAGS.torch_channels_last,
    )  # fmt: skip
    if FLAGS.json:
        for r in results:
            record = provenance()
            record["packages"]["torch"] = torch.__version__
            print(json.dumps({**r, "provenance": record}), flush=True)
    else:
        print(format_table(results))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)
