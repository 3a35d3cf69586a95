"""Device mesh and data-parallel placement: batches split over axis `data`, state replicated.

On many hosts each process feeds its own slice of the global batch and
`jax.make_array_from_process_local_data` assembles the global array; on one host that is the whole
batch. `jax.distributed.initialize()` (see `maybe_initialize_distributed`) must run before any of this.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Joins a multi-process job when the environment describes one (SLURM or JAX_COORDINATOR_ADDRESS)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def per_process_batch_size(global_batch: int, mesh: Mesh) -> int:
    """This process's share of the global batch; it must split evenly over devices."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"config.data.batch_size={global_batch} does not split over {devices} devices; "
            "use a multiple of the device count"
        )
    return global_batch // jax.process_count()


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """The numeric arrays of a process-local batch as global arrays sharded over `data`.

    String fields (video ids) stay on the host for error messages and are dropped here.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in batch.items()
        if np.asarray(v).dtype.kind in "biuf" and np.ndim(v) > 0
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (params, state) on every device."""
    return jax.device_put(tree, replicated(mesh))
