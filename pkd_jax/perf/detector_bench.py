"""Frames/s of MTCNN in JAX on this machine's default device: the full cascade and the tracking step.

    python -m pkd_jax.perf.detector_bench [--weights=mtcnn.npz] [--height=240] [--width=320] \
        [--batches=1,16,64] [--steps=5] [--json]

With static candidate sets the cascade's work does not depend on the image or the weights (every stage runs
on its full padded set), so without `--weights` randomly initialised networks time the same programs; give
the weights to time the real ones anyway. Frames are 320 x 240 by default, the size preprocessing detects
on (`detect_width` 320), with the smallest face 15% of the shorter side as in preprocessing. Each line: the
batch, the compile seconds, the median seconds per call and frames/s, for `detect` (full cascade) and
`refine` (O-Net on one prior box per frame, the tracking step).
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pkd_jax.detect.mtcnn import CascadeSettings, detect_faces, refine_faces
from pkd_jax.detect.mtcnn_nets import NETWORKS


def random_params(seed: int = 0) -> dict[str, Any]:
    """MTCNN variables with random weights (same shapes and programs as the real ones)."""
    keys = jax.random.split(jax.random.key(seed), len(NETWORKS))
    # Jitted: one program per network rather than ~170 operations compiled one by one (and each written to
    # the compilation cache under launch/gpu_check.sh); the same values, about 2 s less start-up.
    return {
        name: jax.jit(cls().init)(key, jnp.zeros((1, size, size, 3)))
        for key, (name, (cls, size)) in zip(keys, NETWORKS.items(), strict=True)
    }


def _time(fn: Callable[[], Any], steps: int) -> tuple[float, float]:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def bench(params: dict[str, Any], height: int, width: int, batches: Sequence[int], steps: int) -> list[dict]:
    """One result per (batch, program) on random frames of `height` x `width`."""
    settings = CascadeSettings(min_face=max(12.0, 0.15 * min(height, width)))
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        frames = jnp.asarray(rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8))
        prior = jnp.tile(jnp.array([[width * 0.3, height * 0.2, width * 0.7, height * 0.8]]), (batch, 1))
        valid = jnp.ones(batch, bool)
        programs: dict[str, Callable[[], Any]] = {
            "detect": functools.partial(detect_faces, params, frames, settings),
            "refine": functools.partial(refine_faces, params, frames, prior, valid, settings),
        }
        for name, fn in programs.items():
            compile_s, step_s = _time(fn, steps)
            rows.append({
                "part": "mtcnn", "program": name, "batch_frames": batch, "height": height, "width": width,
                "compile_s": compile_s, "step_s_median": step_s, "frames_per_s": batch / step_s,
                "device": jax.devices()[0].device_kind,
            })  # fmt: skip
    return rows


def main(argv: Sequence[str]) -> None:
    """The command line (absl flags)."""
    del argv
    from absl import flags

    f = flags.FLAGS
    if f.weights:
        from pkd_jax.weights.mtcnn import load_mtcnn_weights

        params = load_mtcnn_weights(f.weights)
    else:
        params = random_params()
    rows = bench(params, f.height, f.width, [int(b) for b in f.batches], f.steps)
    for row in rows:
        print(json.dumps(row) if f.json else (
            f"{row['program']:7} batch {row['batch_frames']:3}: compile {row['compile_s']:5.1f} s, "
            f"{1e3 * row['step_s_median']:8.2f} ms per call, {row['frames_per_s']:8.1f} frames/s"
        ))  # fmt: skip


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("weights", "", "MTCNN weights .npz (default: random weights, same cost).")
    flags.DEFINE_integer("height", 240, "Frame height.")
    flags.DEFINE_integer("width", 320, "Frame width.")
    flags.DEFINE_list("batches", ["1", "16", "64"], "Frames per call.")
    flags.DEFINE_integer("steps", 5, "Timed calls per setting.")
    flags.DEFINE_bool("json", False, "One JSON object per line.")
    app.run(main)
