"""Device mesh, data-parallel placement and the multi-process runtime.

Batches are split over mesh axis `data`, the train state is replicated. On many hosts JAX runs one
controller process per host (or per GPU): every process runs the same program, feeds its own slice of
the global batch, and `jax.make_array_from_process_local_data` assembles the global array; on one host
that slice is the whole batch. `maybe_initialize_distributed` joins such a job and must run before any
other JAX call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# The variables that name a distributed job when no flag does (JAX reads the first itself as well).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# What `jax.distributed.initialize` needs to find a job by itself inside `srun`.
_SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def in_slurm_job_step() -> bool:
    """True inside an `srun` step of more than one task, where JAX reads the job from SLURM's variables.

    A plain `sbatch` script is a one-task step even in a many-task allocation: it stays single-process.
    """
    if not all(v in os.environ for v in _SLURM_STEP_VARS):
        return False
    tasks = _env_int("SLURM_STEP_NUM_TASKS") or _env_int("SLURM_NTASKS") or 1
    return tasks > 1


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
    """Joins a multi-process job when the arguments or the environment describe one.

    Each argument left as None falls back to the environment: `JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (and `JAX_LOCAL_DEVICE_IDS`, read by JAX itself); whatever is
    still missing inside a many-task `srun` step comes from SLURM's variables (coordinator: the first
    node of the step, one process per task, one GPU per task unless local device ids are given). With
    none of these, or a single process, nothing happens and the run is single-process.

    Returns:
        Whether `jax.distributed.initialize` was called.
    """
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    slurm = in_slurm_job_step()
    if count == 1 or (address is None and count is None and index is None and not slurm):
        return False
    if not slurm and None in (address, count, index):
        raise ValueError(
            "a multi-process run needs all of --coordinator_address, --num_processes and --process_id "
            f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); got "
            f"coordinator_address={address!r}, num_processes={count}, process_id={index}"
        )
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        # Cross-process collectives of the CPU backend (tests, CPU clusters); GPUs use NCCL regardless.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=count,
        process_id=index,
        local_device_ids=list(local_device_ids) if local_device_ids else None,
    )
    logging.info(
        "Joined a %d-process job as process %d (coordinator %s): %d local of %d devices.",
        jax.process_count(), jax.process_index(), address or "from SLURM", jax.local_device_count(),
        jax.device_count(),
    )  # fmt: skip
    return True


def is_chief() -> bool:
    """Process 0: the one that logs and writes files. Collective calls (checkpoints) still run everywhere."""
    return jax.process_index() == 0


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, each process's devices contiguous."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def per_process_batch_size(global_batch: int, mesh: Mesh, field: str = "config.data.batch_size") -> int:
    """This process's share of the global batch (set by `field`); it must split evenly over devices."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"{field}={global_batch} does not split over {devices} devices; "
            "use a multiple of the device count"
        )
    return global_batch // jax.process_count()


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """The numeric arrays of a process-local batch as global arrays sharded over `data`.

    Process p's batch becomes rows [p * b, (p + 1) * b) of the global batch. String fields (video ids)
    stay on the host for error messages and are dropped here.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in batch.items()
        if np.asarray(v).dtype.kind in "biuf" and np.ndim(v) > 0
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (params, state) on every device; every process must pass the same values."""
    target = replicated(mesh)
    if target.is_fully_addressable:
        return jax.device_put(tree, target)

    def place(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, target)  # already global: a reshard over the same devices
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        # device_put cannot send a process's device arrays to other processes' devices; each process
        # fills its own devices from its host copy instead.
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree.map(place, tree)


def local_view(tree: Any) -> Any:
    """The copy of a replicated pytree that lives on this process's first device (no transfer).

    For work each process does on its own, such as evaluation: a jitted function of these arrays runs
    on one local device and never waits for the other processes.
    """

    def view(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.sharding.is_fully_replicated:
                raise ValueError(f"local_view needs replicated arrays; got sharding {x.sharding}")
            return x.addressable_data(0)
        return x

    return jax.tree.map(view, tree)
