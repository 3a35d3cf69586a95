"""PyTorch training pieces at a config's sizes: the reference networks of `torch_reference`, the loss that
`pkd_jax.losses.compose` computes for the config (1 - CCC, the cosine distillation term and its gate), Adam
with pkd_jax's per-module learning rates, and one train step (`TorchStep`). `benchmarks/torch_compare.py`
times a step against pkd_jax's; `pkd_jax.perf.population_bench` trains whole seeds with it. Importing it
needs the `dev` extra (torch)."""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import numpy as np
import torch

from pkd_jax.config import build
from pkd_jax.testing.torch_reference import StudentTorch, TeacherTorch

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
    """One PyTorch train step of `kind` on a fixed batch (the same arrays pkd_jax's step sees), from networks
    initialised under `torch.manual_seed(seed)`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        kind: str,
        batch: dict[str, np.ndarray],
        channels_last: bool = False,
        seed: int = 0,
    ):
        torch.manual_seed(seed)  # the networks' initialisation (and dropout) follow the seed
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
