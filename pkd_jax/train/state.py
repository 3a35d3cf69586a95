"""The train state pytree and the per-module optimizer."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

# Top-level parameter groups of Teacher / Student and the config field holding each learning rate.
LR_FIELDS = {
    "visual_cnn": "lr_visual_cnn",
    "temporal": "lr_temporal",
    "head": "lr_head",
    "audio_cnn": "lr_audio_cnn",
}


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, so it is donated to and returned by the step."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array  # base key; the step folds the step number in, so no key is ever reused

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variable dict for `apply`."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def make_optimizer(optim: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """Adam (AdamW with weight decay) with one learning rate per top-level module group."""
    unknown = set(params) - set(LR_FIELDS)
    if unknown:
        raise ValueError(f"parameter groups {sorted(unknown)} have no learning rate field")

    def adam(lr: float) -> optax.GradientTransformation:
        if optim.weight_decay > 0:
            return optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
        return optax.adam(lr, b1=optim.b1, b2=optim.b2)

    groups = {name: adam(optim[field]) for name, field in LR_FIELDS.items() if name in params}
    labels = {name: jax.tree.map(lambda _, n=name: n, subtree) for name, subtree in params.items()}
    tx = optax.multi_transform(groups, labels)
    if optim.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
    return tx


def create_state(variables: dict[str, Any], tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A fresh state at step 0 from initialised model variables."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=rng,
    )
