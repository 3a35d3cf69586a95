"""Per-layer convolution timings: XLA's convolution against the im2col matrix product of `pkd_jax.models.conv`.

    python benchmarks/conv_bench.py [--batch=10] [--steps=5] [--json]

For every distinct conv layer of the weak setting's trunks at full size (ResNet-18 on a 1x64x100 log-mel
window, VGG19-BN on 112x112 faces; batch 10 = 2 clips x 5 frames), it times the forward pass and the
backward pass (gradients of input and kernel) of both implementations, interleaved, and reports the
medians, the largest relative difference between them, and which one `impl="auto"` picks.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from pkd_jax.models.conv import choose_impl, conv_gemm, conv_xla
from pkd_jax.provenance import provenance

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 10, "Images per batch (clips x frames).")
flags.DEFINE_integer("steps", 5, "Timed repetitions per implementation (interleaved).")
flags.DEFINE_bool("json", False, "One JSON line per layer instead of a table.")

# name, input H, W, C_in, C_out, kernel, stride, padding
LAYERS = (
    ("resnet conv1", 64, 100, 1, 64, 7, 2, 3),
    ("resnet layer1", 16, 25, 64, 64, 3, 1, 1),
    ("resnet layer2_0.conv1", 16, 25, 64, 128, 3, 2, 1),
    ("resnet layer2", 8, 13, 128, 128, 3, 1, 1),
    ("resnet layer3_0.conv1", 8, 13, 128, 256, 3, 2, 1),
    ("resnet layer3", 4, 7, 256, 256, 3, 1, 1),
    ("resnet layer4_0.conv1", 4, 7, 256, 512, 3, 2, 1),
    ("resnet layer4", 2, 4, 512, 512, 3, 1, 1),
    ("vgg features_0", 112, 112, 3, 64, 3, 1, 1),
    ("vgg features_3", 112, 112, 64, 64, 3, 1, 1),
    ("vgg features_10", 56, 56, 128, 128, 3, 1, 1),
    ("vgg features_23", 28, 28, 256, 256, 3, 1, 1),
    ("vgg features_36", 14, 14, 512, 512, 3, 1, 1),
    ("vgg features_49", 7, 7, 512, 512, 3, 1, 1),
)


def _time(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench_layer(h: int, w: int, c_in: int, c_out: int, k: int, stride: int, pad: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(FLAGS.batch, h, w, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)) / np.sqrt(k * k * c_in), jnp.float32)
    strides, padding = (stride, stride), (pad, pad)
    fns = {}
    for name, impl in (("xla", conv_xla), ("gemm", conv_gemm)):
        fwd = jax.jit(lambda x, kernel, impl=impl: impl(x, kernel, strides, padding))
        bwd = jax.jit(
            lambda x, kernel, dy, impl=impl: jax.vjp(lambda a, b: impl(a, b, strides, padding), x, kernel)[1](
                dy
            )
        )
        fns[name] = (fwd, bwd)
    dy = jnp.ones_like(fns["xla"][0](x, kernel)) * 0.1
    outputs = {name: (fwd(x, kernel), bwd(x, kernel, dy)) for name, (fwd, bwd) in fns.items()}  # compile
    rel = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
        for a, b in zip(jax.tree.leaves(outputs["xla"]), jax.tree.leaves(outputs["gemm"]), strict=True)
    )
    times: dict[str, list[float]] = {f"{n}_{p}": [] for n in fns for p in ("fwd", "bwd")}
    for _ in range(FLAGS.steps):
        for name, (fwd, bwd) in fns.items():
            times[f"{name}_fwd"].append(_time(fwd, x, kernel))
            times[f"{name}_bwd"].append(_time(bwd, x, kernel, dy))
    result = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    result["max_rel_diff"] = rel
    result["auto"] = choose_impl("auto", (h, w), (k, k), strides, padding)
    return result


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.json:
        print(f"{'layer':24} {'xla fwd':>8} {'gemm fwd':>9} {'xla bwd':>8} {'gemm bwd':>9}  ms   auto")
    for name, *shape in LAYERS:
        r = bench_layer(*shape)
        if FLAGS.json:
            print(json.dumps({"layer": name, **r, "provenance": provenance()}))
        else:
            print(
                f"{name:24} {r['xla_fwd']:8.1f} {r['gemm_fwd']:9.1f} {r['xla_bwd']:8.1f} {r['gemm_bwd']:9.1f}"
                f"       {r['auto']}  (rel diff {r['max_rel_diff']:.0e})",
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
