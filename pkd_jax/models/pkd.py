"""Teacher (audio + visual) and Student (visual only) of privileged knowledge distillation.

Both map a clip to `(predictions [B, T, num_targets], embedding [B, T, D])`; the embeddings are what
the cosine distillation loss aligns. `stream` does the same from a given recurrent carry and returns
the new one, so evaluation and prediction can walk through long videos chunk by chunk.

Top-level parameter groups (used for per-module learning rates): `visual_cnn`, `temporal`, `head`
and, for the teacher, `audio_cnn`.

Two settings share these classes:
  weak (RECOLA):      `visual_trunk="vgg19_bn"`, frames [B, T, H, W, 3], one time step per frame, GRU,
                      concat-MLP fusion (`fusion="concat"`).
  strong (Aff-Wild2): `visual_trunk="r3d18"`, clips [B, L, C, H, W, 3]: L time steps (sub-sequences)
                      of C frames each, one R3D-18 feature per clip, LSTM, one audio window
                      [B, L, F, W, 1] per sub-sequence, joint cross-attention fusion (`fusion="jca"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models.common import merge_time, split_time
from pkd_jax.models.fusion import ConcatFusionHead, JCASettings, JointCrossAttention, MLPHead
from pkd_jax.models.physio import PhysioEncoder
from pkd_jax.models.r3d import R3D18
from pkd_jax.models.resnet import ResNet18
from pkd_jax.models.temporal import RECURRENT, zero_carry
from pkd_jax.models.vgg import VGG19BN

Carry = Any


VISUAL_TRUNKS = ("vgg19_bn", "r3d18")
FUSIONS = ("concat", "jca")
# A teacher's modalities. Visual is always one: its recurrent layer carries the teacher's temporal context
# and it is the modality the student keeps. The others are fused in this order after it.
MODALITIES = ("visual", "audio", "physio")


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """`modalities` in canonical order (visual, audio, physio), or a ValueError saying what is wrong."""
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or len(set(modalities)) != len(modalities):
        raise ValueError(f"teacher modalities {tuple(modalities)}: each once, from {MODALITIES}")
    if "visual" not in modalities or len(modalities) < 2:
        raise ValueError(
            f"teacher modalities {tuple(modalities)}: a teacher fuses the visual stream with audio, "
            "physio or both (the student distils a visual network)"
        )
    return tuple(m for m in MODALITIES if m in modalities)


def run_trunk(trunk: nn.Module, x: jax.Array, *, frozen: bool, train: bool) -> jax.Array:
    """A per-step trunk over [B, T, ...] -> [B, T, D]; a frozen one in inference mode, without gradient."""
    flat, bt = merge_time(x)
    feats = split_time(trunk(flat, train=train and not frozen), bt)
    return jax.lax.stop_gradient(feats) if frozen else feats


class _VisualTemporal(nn.Module):
    """Shared visual path: a trunk per time step (VGG19-BN on a frame or R3D-18 on a clip), then a
    recurrent layer over time."""

    vgg_width: float = 1.0
    visual_features: int = 512
    cnn_dropout: float = 0.2
    rnn: str = "gru"
    rnn_hidden: int = 1024
    visual_trunk: str = "vgg19_bn"
    r3d_width: float = 1.0
    freeze_visual_cnn: bool = False
    dtype: DTypeLike = jnp.float32

    def setup_visual(self) -> None:
        self.visual_cnn: VGG19BN | R3D18
        if self.visual_trunk == "vgg19_bn":
            self.visual_cnn = VGG19BN(
                width=self.vgg_width,
                embed_dim=self.visual_features,
                dropout=self.cnn_dropout,
                out_dropout=self.cnn_dropout,
                dtype=self.dtype,
            )
        elif self.visual_trunk == "r3d18":
            # R3D-18's pooled output (512 * width) feeds the recurrent layer directly; no extra linear.
            self.visual_cnn = R3D18(width=self.r3d_width, dtype=self.dtype)
        else:
            raise ValueError(f"unknown visual_trunk {self.visual_trunk!r}; choose one of {VISUAL_TRUNKS}")
        if self.rnn not in RECURRENT:
            raise ValueError(f"unknown rnn {self.rnn!r}; choose one of {sorted(RECURRENT)}")
        self.temporal = RECURRENT[self.rnn](hidden=self.rnn_hidden, dtype=self.dtype)

    def trunk_visual(self, frames: jax.Array, *, train: bool = False) -> jax.Array:
        """The visual trunk on every time step: [B, T, ...] -> [B, T, D]. A frozen trunk runs in
        inference mode (running BatchNorm statistics, no dropout) and passes no gradient."""
        # Per time step: a frame for VGG19-BN, a clip [C, H, W, 3] for R3D-18.
        return run_trunk(self.visual_cnn, frames, frozen=self.freeze_visual_cnn, train=train)

    def encode_visual(
        self, frames: jax.Array | None, carry: Carry, train: bool, features: jax.Array | None = None
    ) -> tuple[jax.Array, Carry]:
        """The recurrent layer over the trunk's features, computed from `frames` unless given."""
        if features is None:
            if frames is None:
                raise ValueError("the visual path needs frames or precomputed visual_features")
            features = self.trunk_visual(frames, train=train)
        return self.temporal(features.astype(self.dtype), carry)

    def zero_carry(self, batch: int) -> Carry:
        """The recurrent state at the start of a clip or video."""
        return zero_carry(self.rnn, self.rnn_hidden, batch)


class Student(_VisualTemporal):
    """Visual-only network (also the visual-only baseline): frames [B, T, H, W, 3] in [0, 1] (weak
    setting) or clips [B, L, C, H, W, 3] (strong setting).

    The distilled embedding is head layer `embed_index`. It must match the teacher's embedding in size:
    weak setting, 128 = the teacher's last fused layer; strong setting, head (128, 128) with
    `embed_index=1`, 128 = the JCA regressor's hidden layer (`jca_embedding="hidden"`), so no projection.
    Where the sizes differ (strong setting with `jca_embedding="attended"`, 2d' = 256), `embed_features`
    names the teacher's size and a linear projection `head/embed_proj` maps the student's layer onto it.
    """

    head_features: Sequence[int] = (512, 256, 128, 64)
    embed_index: int = 2
    num_targets: int = 2
    activation: str = "none"
    embed_features: int = 0

    def setup(self) -> None:
        self.setup_visual()
        self.head = MLPHead(
            features=tuple(self.head_features),
            embed_index=self.embed_index,
            num_targets=self.num_targets,
            activation=self.activation,
            embed_features=self.embed_features,
            dtype=self.dtype,
        )

    def stream(
        self,
        frames: jax.Array | None,
        carry: Carry = None,
        *,
        train: bool = False,
        visual_features: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """Predictions, embedding and the carry after the last frame, starting from `carry`.
        `visual_features` [B, T, D] (a frozen trunk's cached output) replace the trunk on `frames`."""
        hidden, carry = self.encode_visual(frames, carry, train, visual_features)
        pred, emb = self.head(hidden)
        return pred.astype(jnp.float32), emb.astype(jnp.float32), carry

    def __call__(
        self, frames: jax.Array | None, *, train: bool = False, visual_features: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        pred, emb, _ = self.stream(frames, None, train=train, visual_features=visual_features)
        return pred, emb


class Teacher(_VisualTemporal):
    """Multimodal network: frames with audio windows [B, T, F, W, C] (log-mel, C = 1 by default), windows
    of physiological features [B, T, Wp, Fp], or both, as `modalities` says (default: the paper's audio
    and visual).

    `fusion="concat"` (weak setting): per-frame audio and physiological features, concatenated with the
    recurrent visual output, and an MLP (`ConcatFusionHead`). `fusion="jca"` (strong setting): one window
    of each per sub-sequence, joint cross-attention between the trunk features and the LSTM visual
    features over the window's `jca.length` steps (`JointCrossAttention`); its embedding is chosen by
    `jca.embedding`. Streams are passed and returned in the order of `modality_order` (visual first).
    """

    audio_width: float = 1.0
    fusion_visual_features: int = 1024
    fused_features: Sequence[int] = (256, 128)
    num_targets: int = 2
    activation: str = "none"
    fusion: str = "concat"
    jca: JCASettings = JCASettings()  # fusion="jca" only
    freeze_audio_cnn: bool = False
    modalities: Sequence[str] = ("audio", "visual")
    physio_width: int = 32  # physio: the encoder's first convolution's channels
    physio_features: int = 128  # physio: the encoder's output size

    @property
    def modality_order(self) -> tuple[str, ...]:
        """The modalities in the order the methods take and return them: visual, then audio, physio."""
        return check_modalities(self.modalities)

    def setup(self) -> None:
        self.setup_visual()
        modalities = self.modality_order
        if "audio" in modalities:
            self.audio_cnn = ResNet18(width=self.audio_width, dtype=self.dtype)
        if "physio" in modalities:
            self.physio_cnn = PhysioEncoder(
                width=self.physio_width, features=self.physio_features, dtype=self.dtype
            )
        self.head: ConcatFusionHead | JointCrossAttention
        if self.fusion == "concat":
            self.head = ConcatFusionHead(
                visual_features=self.fusion_visual_features,
                fused_features=tuple(self.fused_features),
                num_targets=self.num_targets,
                activation=self.activation,
                dtype=self.dtype,
            )
        elif self.fusion == "jca":
            if self.jca.num_modalities != len(modalities):
                raise ValueError(
                    f"JCA settings for {self.jca.num_modalities} modalities, the teacher has {modalities}"
                )
            self.head = JointCrossAttention(self.jca, num_targets=self.num_targets, dtype=self.dtype)
        else:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose one of {FUSIONS}")

    def trunk_audio(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
        """The audio trunk on every time step's window: [B, T, F, W, C] -> [B, T, Da]; frozen, it runs
        in inference mode and passes no gradient."""
        return run_trunk(self.audio_cnn, audio, frozen=self.freeze_audio_cnn, train=train)

    def frame_features(
        self,
        frames: jax.Array | None,
        audio: jax.Array | None,
        physio: jax.Array | None = None,
        *,
        train: bool = False,
        visual_features: jax.Array | None = None,
        audio_features: jax.Array | None = None,
    ) -> tuple[jax.Array, ...]:
        """Per-frame trunk features of each stream (visual [B, T, Dv], then audio [B, T, Da] and physio
        [B, T, Dp] where the teacher has them); no temporal context. Features given (a frozen trunk's
        cached output) are used as they are."""
        if visual_features is None:
            if frames is None:
                raise ValueError("the teacher needs frames or precomputed visual_features")
            visual_features = self.trunk_visual(frames, train=train)
        out = [visual_features]
        for name, given, inputs in (("audio", audio_features, audio), ("physio", None, physio)):
            if name not in self.modality_order:
                continue
            if given is None:
                if inputs is None:
                    raise ValueError(
                        f"the teacher needs {name} windows"
                        + (" or precomputed audio_features" if name == "audio" else "")
                    )
                if inputs.shape[:2] != visual_features.shape[:2]:
                    raise ValueError(
                        f"{name} windows {inputs.shape[:2]} do not match video frames "
                        f"{visual_features.shape[:2]} in [batch, time]"
                    )
                given = (
                    self.trunk_audio(inputs, train=train)
                    if name == "audio"
                    else run_trunk(self.physio_cnn, inputs, frozen=False, train=train)
                )
            out.append(given)
        return tuple(x.astype(self.dtype) for x in out)

    def from_features(
        self, streams: Sequence[jax.Array], carry: Carry = None, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """The recurrent layer and fusion head on the streams' trunk features (`frame_features`' order);
        the cheap part of the teacher. `train` only matters for the JCA regressor's dropout."""
        visual, *others = streams
        hidden, carry = self.temporal(visual, carry)
        if isinstance(self.head, JointCrossAttention):  # fusion="jca"
            named = dict(zip(self.modality_order[1:], others, strict=True))
            pred, emb = self.head({"visual": hidden, **named}, train=train)
        else:
            pred, emb = self.head(hidden, *others)
        return pred.astype(jnp.float32), emb.astype(jnp.float32), carry

    def stream(
        self,
        frames: jax.Array | None,
        audio: jax.Array | None,
        physio: jax.Array | None = None,
        carry: Carry = None,
        *,
        train: bool = False,
        visual_features: jax.Array | None = None,
        audio_features: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """Predictions, embedding and the carry after the last frame, starting from `carry`."""
        streams = self.frame_features(
            frames, audio, physio, train=train, visual_features=visual_features, audio_features=audio_features
        )
        return self.from_features(streams, carry, train=train)

    def __call__(
        self,
        frames: jax.Array | None,
        audio: jax.Array | None,
        physio: jax.Array | None = None,
        *,
        train: bool = False,
        visual_features: jax.Array | None = None,
        audio_features: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        pred, emb, _ = self.stream(
            frames, audio, physio, None, train=train, visual_features=visual_features,
            audio_features=audio_features,
        )  # fmt: skip
        return pred, emb
