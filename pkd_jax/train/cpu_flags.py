"""XLA:CPU flags that measured faster for a compute dtype, set for a process that will run on the CPU.

XLA reads `XLA_FLAGS` once, when JAX starts its first backend, so `apply_cpu_flags` must run before
anything asks JAX for devices. It adds flags only where the process runs on the CPU (`JAX_PLATFORMS`
names cpu first, or no GPU or TPU plugin is installed), never where an accelerator would run the program,
keeps any flag the user set, and is switched off by `PKD_JAX_CPU_FLAGS=0`.

bfloat16 uses oneDNN's kernels through XLA's custom calls, which made the full-size bf16 train steps
faster on an AVX512-BF16 CPU; float32 gets no flag, since the same flag slowed a float32 VGG19 layer's
forward and backward. The measurements, with their dates and commands, are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import os

from absl import logging

# dtype -> flags measured to win on XLA:CPU for it.
CPU_FLAGS = {"bfloat16": ("--xla_cpu_experimental_onednn_custom_call=true",)}
_ACCELERATOR_PLUGINS = (
    "jax_cuda12_plugin",
    "jax_cuda13_plugin",
    "jax_rocm60_plugin",
    "jax_rocm7_plugin",
    "libtpu",
)


def runs_on_cpu() -> bool:
    """Whether JAX will pick the CPU: `JAX_PLATFORMS` says so, or no accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def apply_cpu_flags(dtype: str) -> list[str]:
    """Adds the flags of `CPU_FLAGS[dtype]` to `XLA_FLAGS` when this process will run on the CPU and JAX
    has not started a backend yet; returns the flags added."""
    wanted = CPU_FLAGS.get(dtype, ())
    if not wanted or os.environ.get("PKD_JAX_CPU_FLAGS", "1") == "0" or not runs_on_cpu():
        return []
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        logging.warning("XLA:CPU flags for %s not set: JAX's backend is already running.", dtype)
        return []
    existing = os.environ.get("XLA_FLAGS", "")
    added = [flag for flag in wanted if flag.split("=")[0] not in existing]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([existing, *added]).strip()
        logging.info("XLA:CPU flags for %s: %s", dtype, " ".join(added))
    return added
