"""Per-layer convolution timings of the implementations in `pkd_jax.models.conv`.

    python benchmarks/conv_bench.py [--batch=10] [--steps=5] [--impls=xla,gemm,split] [--only=vgg] [--json]

For every distinct conv layer of the weak setting's trunks at full size (ResNet-18 on a 1x64x100 log-mel
window, VGG19-BN on 112x112 faces; batch 10 = 2 clips x 5 frames), it times the forward pass and the
backward pass (gradients of input and kernel) of each implementation, interleaved, and reports the
medians, each one's backward time over the first's, the largest relative difference from the first, and
which one `impl="auto"` picks on this platform.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from pkd_jax.models.conv import choose_impl, conv_gemm, conv_split, conv_xla
from pkd_jax.provenance import provenance

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 10, "Images per batch (clips x frames).")
flags.DEFINE_integer("steps", 5, "Timed repetitions per implementation (interleaved).")
flags.DEFINE_bool("json", False, "One JSON line per layer instead of a table.")
flags.DEFINE_list("impls", ["xla", "gemm", "split"], "Implementations to time; ratios are against the first.")
flags.DEFINE_string("only", "", "Only the layers whose name contains this (e.g. vgg).")

IMPL_FNS = {"xla": conv_xla, "gemm": conv_gemm, "split": conv_split}

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
    ("vgg features_7", 56, 56, 64, 128, 3, 1, 1),
    ("vgg features_10", 56, 56, 128, 128, 3, 1, 1),
    ("vgg features_14", 28, 28, 128, 256, 3, 1, 1),
    ("vgg features_23", 28, 28, 256, 256, 3, 1, 1),
    ("vgg features_27", 14, 14, 256, 512, 3, 1, 1),
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
    for name in FLAGS.impls:
        impl = IMPL_FNS[name]
        fwd = jax.jit(lambda x, kernel, impl=impl: impl(x, kernel, strides, padding))
        bwd = jax.jit(
            lambda x, kernel, dy, impl=impl: jax.vjp(lambda a, b: impl(a, b, strides, padding), x, kernel)[1](
                dy
            )
        )
        fns[name] = (fwd, bwd)
    first = FLAGS.impls[0]
    dy = jnp.asarray(rng.normal(size=fns[first][0](x, kernel).shape), jnp.float32)
    outputs = {name: (fwd(x, kernel), bwd(x, kernel, dy)) for name, (fwd, bwd) in fns.items()}  # compile
    rel = {
        name: max(
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
            for a, b in zip(jax.tree.leaves(outputs[first]), jax.tree.leaves(out), strict=True)
        )
        for name, out in outputs.items()
    }
    times: dict[str, list[float]] = {f"{n}_{p}": [] for n in fns for p in ("fwd", "bwd")}
    for _ in range(FLAGS.steps):
        for name, (fwd, bwd) in fns.items():
            times[f"{name}_fwd"].append(_time(fwd, x, kernel))
            times[f"{name}_bwd"].append(_time(bwd, x, kernel, dy))
    result: dict = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    for name in fns:
        result[f"{name}_bwd_ratio"] = result[f"{name}_bwd"] / result[f"{first}_bwd"]
        result[f"{name}_max_rel_diff"] = rel[name]
    result["auto"] = choose_impl(
        "auto", (h, w), (k, k), strides, padding, batch=FLAGS.batch, features=(c_in, c_out)
    )
    return result


def main(argv: list[str]) -> None:
    del argv
    unknown = set(FLAGS.impls) - set(IMPL_FNS)
    if unknown:
        raise app.UsageError(f"unknown --impls {sorted(unknown)}; choose among {sorted(IMPL_FNS)}")
    if not FLAGS.json:
        cols = [f"{n} {p}" for p in ("fwd", "bwd") for n in FLAGS.impls]
        ratios = [f"{n}/{FLAGS.impls[0]}" for n in FLAGS.impls[1:]]
        print(f"{'layer':24} " + " ".join(f"{c:>10}" for c in cols + ratios) + "  (ms; bwd ratios)  auto")
    for name, *shape in LAYERS:
        if FLAGS.only not in name:
            continue
        r = bench_layer(*shape)
        if FLAGS.json:
            print(
                json.dumps({"layer": name, "batch": FLAGS.batch, **r, "provenance": provenance()}), flush=True
            )
        else:
            cells = [r[f"{n}_{p}"] for p in ("fwd", "bwd") for n in FLAGS.impls]
            cells += [r[f"{n}_bwd_ratio"] for n in FLAGS.impls[1:]]
            worst = max(r[f"{n}_max_rel_diff"] for n in FLAGS.impls)
            print(
                f"{name:24} "
                + " ".join(f"{c:10.2f}" for c in cells)
                + f"  {r['auto']}  (rel diff {worst:.0e})",
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
