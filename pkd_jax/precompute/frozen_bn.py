"""BatchNorm statistics of a frozen trunk that was never trained, estimated before it is frozen.

A frozen trunk runs in inference mode, normalising with its stored running statistics. A pretrained trunk
(`config.pretrained`) brings statistics of its own; a freshly initialised one has mean 0 and variance 1
everywhere, so its BatchNorm layers normalise nothing and the signal shrinks through every ReLU: on the
demo's tiny VGG19-BN the output features of a random, frozen trunk were about 2e-4 in size and varied by
2e-5 over a video, and the visual-only networks learned nothing from them (dev CCC 0.000).
`calibrate_untrained` gives such a trunk the statistics of its own layers on training inputs ("precise
BN", Wu & Johnson 2021): the trunk runs in training mode on `model.frozen_bn_calibration_frames` inputs
spread evenly over the training videos, in batches, and each layer's running mean and variance become
the average of its batch statistics. The trunk's weights do not change.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.models import Network
from pkd_jax.models.common import BN_MOMENTUM
from pkd_jax.models.inputs import trunk_input
from pkd_jax.precompute.trunk_features import trunk_inputs, trunk_reader


def has_untrained_statistics(variables: dict[str, Any], group: str) -> bool:
    """True when every BatchNorm of `group` holds its initial statistics (mean 0, variance 1)."""
    stats = variables.get("batch_stats", {}).get(group)
    if not stats:
        return False
    flat = jax.tree_util.tree_leaves_with_path(stats)
    return all(
        np.all(np.asarray(leaf) == (1.0 if jax.tree_util.keystr(path).endswith("['var']") else 0.0))
        for path, leaf in flat
    )


def calibration_index(lengths: list[int], count: int) -> list[tuple[int, np.ndarray]]:
    """`count` time indices spread evenly over videos of `lengths` frames, as (video, indices) pairs."""
    total = sum(lengths)
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    starts = np.cumsum([0, *lengths])
    return [
        (v, picks[(picks >= starts[v]) & (picks < starts[v + 1])] - starts[v])
        for v in range(len(lengths))
        if np.any((picks >= starts[v]) & (picks < starts[v + 1]))
    ]


def calibrate_group(
    config: ml_collections.ConfigDict,
    model: Network,
    variables: dict[str, Any],
    cache: Cache,
    group: str,
    *,
    count: int,
    batch: int = 64,
) -> dict[str, Any]:
    """`variables` with `group`'s BatchNorm statistics averaged over batches of `count` training inputs."""
    reader = trunk_reader(config, cache, group)
    video_ids = cache.ids("train")
    lengths = [cache.video(v).num_frames for v in video_ids]
    inputs = np.concatenate(
        [trunk_inputs(reader, video_ids[v], index, group) for v, index in calibration_index(lengths, count)]
    )
    dtype = build.compute_dtype(config)

    def trunk_in_training_mode(module: Any, x: jax.Array) -> jax.Array:
        return getattr(module, group)(x, train=True)

    @jax.jit
    def new_statistics(v: Any, x: jax.Array) -> Any:
        _, updates = model.apply(
            v, trunk_input(group, x, dtype), method=trunk_in_training_mode, mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )  # fmt: skip
        return updates["batch_stats"][group]

    old = variables["batch_stats"][group]
    total: Any = None
    for first in range(0, len(inputs), batch):
        part = inputs[first : first + batch]
        new = jax.device_get(new_statistics(variables, part))
        # Undo the running average (the batch's own statistics), as first and second moments weighted
        # by the batch's size, so the result is the mean and variance over all `count` inputs.
        own = jax.tree.map(lambda n, o: (np.float64(n) - BN_MOMENTUM * o) / (1 - BN_MOMENTUM), new, old)
        weight = len(part)
        moments = _map_layers(own, lambda mean, var, w=weight: (w * mean, w * (var + mean**2)))
        total = moments if total is None else jax.tree.map(np.add, total, moments)
    n = len(inputs)
    calibrated = _map_layers(total, lambda m1, m2: (m1 / n, np.maximum(m2 / n - (m1 / n) ** 2, 0.0)))
    calibrated = jax.tree.map(lambda x: np.asarray(x, np.float32), calibrated)
    batch_stats = {**variables["batch_stats"], group: calibrated}
    return {**variables, "batch_stats": batch_stats}


def _map_layers(tree: Any, fn: Any) -> Any:
    """Applies `fn(mean, var) -> (mean, var)` to every BatchNorm layer ({"mean", "var"}) of a tree."""
    if isinstance(tree, dict) and set(tree) == {"mean", "var"}:
        mean, var = fn(tree["mean"], tree["var"])
        return {"mean": mean, "var": var}
    return {k: _map_layers(v, fn) for k, v in tree.items()}


def calibrate_untrained(
    config: ml_collections.ConfigDict, model: Network, variables: dict[str, Any], cache: Cache
) -> dict[str, Any]:
    """Every frozen trunk of the config with initial BatchNorm statistics, calibrated on training inputs
    (`model.frozen_bn_calibration_frames`; 0 leaves them as they are)."""
    count = config.model.frozen_bn_calibration_frames
    for group in build.frozen_trunks(config):
        if count and has_untrained_statistics(variables, group):
            logging.info(
                "Frozen %s has untrained BatchNorm statistics: estimating them on %d inputs.", group, count
            )
            variables = calibrate_group(config, model, variables, cache, group, count=count)
    return variables
