"""Heads and multimodal fusion.

`MLPHead` is the student's head; `ConcatFusionHead` is the weak-setting teacher's concat-MLP fusion;
`JointCrossAttention` is the strong setting's fusion (Praveen et al.; equations in docs/method.md), sized
by `JCASettings`, the one declaration of its settings. Both fuse two or three streams (audio, visual and
physiological features); with audio and visual alone they are the paper's networks, parameter names
included.

Activations: the released code has none between its linear layers, the paper's text speaks of
"non-linear transformations". `activation="none"` reproduces the code, `"relu"` the text. With an
activation, it follows every hidden layer, the embedding layer included, so the distilled embedding
is the layer's post-activation output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from pkd_jax.models.common import get_activation

# What `JointCrossAttention` returns as the distilled embedding (see its docstring).
JCA_EMBEDDINGS = ("hidden", "attended")
# Joint cross-attention's streams in the order their attended features are concatenated, with the letter
# of each one's parameters (`w_ja`, `w_hv`, ...); audio then visual is the paper's order.
JCA_STREAMS = {"audio": "a", "visual": "v", "physio": "p"}


@dataclasses.dataclass(frozen=True)
class JCASettings:
    """Sizes of joint cross-attention; the training config sets each as `model.jca_<name>`, except
    `length`, which is the window's sub-sequence count (`data.window_subsequences`)."""

    length: int = 8  # L: time steps attended over
    dim: int = 128  # d': the size audio and visual features are projected to
    k: int = 32  # the attention's hidden size
    hidden: int = 128  # regressor hidden layer (2d' -> hidden -> targets)
    dropout: float = 0.6  # before the regressor's output layer
    embedding: str = "hidden"  # the distilled embedding: "hidden" (regressor layer) or "attended" (n d')
    num_modalities: int = 2  # fused modalities n (2: audio and visual; 3 with physiological features)

    @property
    def embedding_size(self) -> int:
        """Size of the embedding `JointCrossAttention` returns."""
        return self.hidden if self.embedding == "hidden" else self.num_modalities * self.dim


class MLPHead(nn.Module):
    """Linear stack with the distilled embedding tapped at layer `embed_index`.

    Returns (predictions [..., num_targets], embedding [..., features[embed_index]]).
    Student sizes (released code): features (512, 256, 128, 64), embed_index 2.

    `embed_features` > 0 adds a linear projection `embed_proj` of the tapped layer to that size, for a
    teacher whose embedding has another size; the projection only feeds the distillation loss.
    """

    features: Sequence[int] = (512, 256, 128, 64)
    embed_index: int = 2
    num_targets: int = 2
    activation: str = "none"
    embed_features: int = 0
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = get_activation(self.activation)
        embedding = None
        for i, width in enumerate(self.features):
            x = act(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x))
            if i == self.embed_index:
                embedding = x
        if embedding is None:
            raise ValueError(f"embed_index {self.embed_index} is outside {len(self.features)} layers")
        out = nn.Dense(self.num_targets, dtype=self.dtype, name="out")(x)
        if self.embed_features and self.embed_features != embedding.shape[-1]:
            embedding = nn.Dense(self.embed_features, dtype=self.dtype, name="embed_proj")(embedding)
        return out, embedding


class ConcatFusionHead(nn.Module):
    """Teacher head of the weak setting: visual [..., 1024] -> linear 1024, concat audio [..., 512],
    then 1536 -> 256 -> 128 (the distilled embedding) -> targets (released-code sizes).

    `others` are the non-visual streams' features (audio, physiological), concatenated in that order
    after the projected visual features."""

    visual_features: int = 1024
    fused_features: Sequence[int] = (256, 128)
    num_targets: int = 2
    activation: str = "none"
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, visual: jax.Array, *others: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = get_activation(self.activation)
        x = act(nn.Dense(self.visual_features, dtype=self.dtype, name="visual_proj")(visual))
        x = jnp.concatenate([x, *(o.astype(x.dtype) for o in others)], axis=-1)
        for i, width in enumerate(self.fused_features):
            x = act(nn.Dense(width, dtype=self.dtype, name=f"fused_{i}")(x))
        out = nn.Dense(self.num_targets, dtype=self.dtype, name="out")(x)
        return out, x


class JointCrossAttention(nn.Module):
    """Joint cross-attention fusion over a window of L time steps (docs/method.md, strong setting).

    Audio and visual features [B, L, d] are first projected to d' = `dim`; with J = [Xa, Xv] (L x 2d'):
      Ca = tanh(Xa^T W_ja J / sqrt(2d')),  Ha = ReLU(Ca W_ca + Xa^T W_a),  Xatt_a = (Ha W_ha)^T + Xa
    (likewise for the visual side), then a regressor on [Xatt_a, Xatt_v]: 2d' -> 128 -> dropout -> targets.
    W_ja, W_jv mix time (L x L), W_a, W_v: L -> k, W_ha, W_hv: k -> L, W_ca, W_cv: 2d' -> k.
    With n streams (physiological features Xp as a third), J = [Xa, Xv, Xp] (L x n d'), every stream
    attends to it the same way, the scale is 1 / sqrt(n d') and the regressor reads the n d' attended
    features: the joint representation of the three-modality extension of the same authors.

    Returns (predictions [B, L, targets], embedding). The embedding (`embedding`, the fused
    representation the student distils) is either
      "hidden":   the regressor's hidden layer (post-ReLU, before dropout) [B, L, hidden], the
                  counterpart of the weak setting's 128-d fused layer (default), or
      "attended": the concatenated attended features [Xatt_a, Xatt_v] [B, L, 2d'] (n d' for n streams).
    The regressor reads the 2d' concatenation, as in the paper (the reference repository's regressor
    expects 640 inputs, which does not match its own 2 x 128 attended features).
    """

    settings: JCASettings = JCASettings()
    num_targets: int = 2
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, streams: Mapping[str, jax.Array], *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Fuses `streams` ({"audio": [B, L, da], "visual": [B, L, dv], "physio": ...}, two or three)."""
        s = self.settings
        names = [n for n in JCA_STREAMS if n in streams]
        if len(names) != len(streams) or len(names) != s.num_modalities:
            raise ValueError(
                f"joint cross-attention was built for {s.num_modalities} of the streams {list(JCA_STREAMS)}, "
                f"got {sorted(streams)}"
            )
        lengths = {n: streams[n].shape[1] for n in names}
        if any(length != s.length for length in lengths.values()):
            raise ValueError(f"joint cross-attention was built for {s.length} steps, got {lengths}")
        projected = [nn.Dense(s.dim, dtype=self.dtype, name=f"{n}_proj")(streams[n]) for n in names]
        joint = jnp.concatenate(projected, axis=-1)  # [B, L, n d']
        scale = (len(names) * s.dim) ** -0.5
        init = nn.initializers.lecun_normal()

        def attend(x: jax.Array, side: str) -> jax.Array:
            w_j = self.param(f"w_j{side}", init, (s.length, s.length))
            w_x = self.param(f"w_{side}", init, (s.length, s.k))
            w_h = self.param(f"w_h{side}", init, (s.k, s.length))
            # Correlation of each feature channel with the joint representation: [B, d', 2d'].
            corr = jnp.tanh(jnp.einsum("bld,lm,bme->bde", x, w_j, joint) * scale)
            h = nn.relu(
                nn.Dense(s.k, use_bias=False, dtype=self.dtype, name=f"w_c{side}")(corr)
                + jnp.einsum("bld,lk->bdk", x, w_x)
            )  # [B, d', k]
            return jnp.einsum("bdk,kl->bld", h, w_h) + x

        if s.embedding not in JCA_EMBEDDINGS:
            raise ValueError(f"unknown JCA embedding {s.embedding!r}; choose one of {JCA_EMBEDDINGS}")
        fused = jnp.concatenate(
            [attend(x, JCA_STREAMS[n]) for n, x in zip(names, projected, strict=True)], axis=-1
        )
        hidden = nn.relu(nn.Dense(s.hidden, dtype=self.dtype, name="regressor_hidden")(fused))
        dropped = nn.Dropout(s.dropout, deterministic=not train)(hidden)
        out = nn.Dense(self.num_targets, dtype=self.dtype, name="regressor_out")(dropped)
        return out, hidden if s.embedding == "hidden" else fused

    def embedding_size(self) -> int:
        """Size of the returned embedding."""
        return self.settings.embedding_size
