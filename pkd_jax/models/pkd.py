"""Teacher (audio + visual) and Student (visual only) of privileged knowledge distillation.

Both map a clip to `(predictions [B, T, num_targets], embedding [B, T, D])`; the embeddings are what
the cosine distillation loss aligns. `stream` does the same from a given recurrent carry and returns
the new one, so evaluation and prediction can walk through long videos chunk by chunk.

Top-level parameter groups (used for per-module learning rates): `visual_cnn`, `temporal`, `head`
and, for the teacher, `audio_cnn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pkd_jax.models.common import merge_time, split_time
from pkd_jax.models.fusion import ConcatFusionHead, MLPHead
from pkd_jax.models.resnet import ResNet18
from pkd_jax.models.temporal import RECURRENT, zero_carry
from pkd_jax.models.vgg import VGG19BN

Carry = Any


class _VisualTemporal(nn.Module):
    """Shared visual path: per-frame VGG19-BN, then a recurrent layer over time."""

    vgg_width: float = 1.0
    visual_features: int = 512
    cnn_dropout: float = 0.2
    rnn: str = "gru"
    rnn_hidden: int = 1024
    dtype: jnp.dtype = jnp.float32

    def setup_visual(self) -> None:
        self.visual_cnn = VGG19BN(
            width=self.vgg_width,
            embed_dim=self.visual_features,
            dropout=self.cnn_dropout,
            out_dropout=self.cnn_dropout,
            dtype=self.dtype,
        )
        if self.rnn not in RECURRENT:
            raise ValueError(f"unknown rnn {self.rnn!r}; choose one of {sorted(RECURRENT)}")
        self.temporal = RECURRENT[self.rnn](hidden=self.rnn_hidden, dtype=self.dtype)

    def encode_visual(self, frames: jax.Array, carry: Carry, train: bool) -> tuple[jax.Array, Carry]:
        flat, bt = merge_time(frames)
        feats = split_time(self.visual_cnn(flat, train=train), bt)
        return self.temporal(feats, carry)

    def zero_carry(self, batch: int) -> Carry:
        """The recurrent state at the start of a clip or video."""
        return zero_carry(self.rnn, self.rnn_hidden, batch)


class Student(_VisualTemporal):
    """Visual-only network (also the visual-only baseline): frames [B, T, H, W, 3] in [0, 1]."""

    head_features: Sequence[int] = (512, 256, 128, 64)
    embed_index: int = 2
    num_targets: int = 2
    activation: str = "none"

    def setup(self) -> None:
        self.setup_visual()
        self.head = MLPHead(
            features=tuple(self.head_features),
            embed_index=self.embed_index,
            num_targets=self.num_targets,
            activation=self.activation,
            dtype=self.dtype,
        )

    def stream(
        self, frames: jax.Array, carry: Carry = None, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """Predictions, embedding and the carry after the last frame, starting from `carry`."""
        hidden, carry = self.encode_visual(frames, carry, train)
        pred, emb = self.head(hidden)
        return pred.astype(jnp.float32), emb.astype(jnp.float32), carry

    def __call__(self, frames: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        pred, emb, _ = self.stream(frames, None, train=train)
        return pred, emb


class Teacher(_VisualTemporal):
    """Audio-visual network of the weak setting: frames [B, T, H, W, 3] and per-frame audio
    windows [B, T, F, W, C] (log-mel, C = 1 by default), fused by concatenation."""

    audio_width: float = 1.0
    fusion_visual_features: int = 1024
    fused_features: Sequence[int] = (256, 128)
    num_targets: int = 2
    activation: str = "none"

    def setup(self) -> None:
        self.setup_visual()
        self.audio_cnn = ResNet18(width=self.audio_width, dtype=self.dtype)
        self.head = ConcatFusionHead(
            visual_features=self.fusion_visual_features,
            fused_features=tuple(self.fused_features),
            num_targets=self.num_targets,
            activation=self.activation,
            dtype=self.dtype,
        )

    def frame_features(
        self, frames: jax.Array, audio: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """Per-frame trunk features (visual [B, T, Dv], audio [B, T, Da]); no temporal context."""
        if audio.shape[:2] != frames.shape[:2]:
            raise ValueError(
                f"audio windows {audio.shape[:2]} do not match video frames {frames.shape[:2]} "
                "in [batch, time]"
            )
        flat, bt = merge_time(frames)
        visual = split_time(self.visual_cnn(flat, train=train), bt)
        flat, bt = merge_time(audio)
        return visual, split_time(self.audio_cnn(flat, train=train), bt)

    def from_features(
        self, visual: jax.Array, audio: jax.Array, carry: Carry = None
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """The recurrent layer and fusion head on trunk features; the cheap part of the teacher."""
        hidden, carry = self.temporal(visual, carry)
        pred, emb = self.head(hidden, audio)
        return pred.astype(jnp.float32), emb.astype(jnp.float32), carry

    def stream(
        self, frames: jax.Array, audio: jax.Array, carry: Carry = None, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array, Carry]:
        """Predictions, embedding and the carry after the last frame, starting from `carry`."""
        visual, audio_feats = self.frame_features(frames, audio, train=train)
        return self.from_features(visual, audio_feats, carry)

    def __call__(
        self, frames: jax.Array, audio: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        pred, emb, _ = self.stream(frames, audio, None, train=train)
        return pred, emb
