"""Peak FLOP/s of the device a step runs on, the denominator of model FLOPs utilisation (MFU).

Accelerators: dense (no sparsity) tensor-core peaks from the vendors' data sheets, per compute dtype.
CPUs have no data sheet number worth trusting across machines, so their peak is measured: the best of a
few large square matrix products in the compute dtype, compiled by XLA on this machine, which is what an
ideal convolution-bound step could reach.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# device_kind substring -> {dtype: dense peak FLOP/s}. float32 on NVIDIA uses the TF32 tensor-core peak,
# which is what XLA uses for float32 matmuls and convolutions at default precision.
KNOWN_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; the PCIe card is 756 / 378
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L40S": {"bfloat16": 362e12, "float32": 183e12},
    "L4": {"bfloat16": 121e12, "float32": 60e12},
    "A10": {"bfloat16": 125e12, "float32": 62.5e12},
    "V100": {"bfloat16": 125e12, "float32": 15.7e12},  # V100 has fp16 tensor cores, no bf16
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12},
}


def known_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet peak for `device_kind` (as `jax.Device.device_kind` spells it), or None."""
    if "PCIe" in device_kind and "H100" in device_kind:
        return {"bfloat16": 756e12, "float32": 378e12}.get(dtype)
    for name, peaks in KNOWN_PEAKS.items():
        if name in device_kind:
            return peaks.get(dtype)
    return None


@functools.cache
def measured_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` n x n x n matrix products on the default device."""
    jdtype = jnp.dtype(dtype)
    a = jnp.ones((n, n), jdtype)
    b = jnp.ones((n, n), jdtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def device_peak(dtype: str, override: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for the first device and compute dtype `dtype`."""
    if override:
        return override, "--peak_flops"
    device = jax.devices()[0]
    if device.platform != "cpu":
        peak = known_peak(device.device_kind, dtype)
        if peak:
            return peak, f"data sheet, {device.device_kind} {dtype} dense"
    return measured_matmul_peak(dtype), f"measured {dtype} 2048^3 matmul on {device.device_kind}"
