"""Whole train steps with each `Conv(impl=...)` choice, against PyTorch, interleaved in one process.

    python benchmarks/conv_impl_step.py --config=configs/recola_student.py --kinds=visual --batch=2 \
        [--impls=xla,auto] [--steps=5] [--warmup=1] [--json]

The models build their `Conv` layers with `impl="auto"`; for each entry of `--impls` this script compiles
pkd_jax's step (`torch_compare.JaxStep`) with every "auto" layer resolved to that entry instead ("auto"
itself keeps `choose_impl`'s per-layer choice, "xla" is XLA's convolution everywhere), then times those
steps and the PyTorch step of `torch_compare.TorchStep` in rounds whose order rotates, so machine noise
hits all alike. Reports per kind each variant's median step seconds, its ratio to the first variant and
to PyTorch.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch_compare  # this folder, on the path when run as a script
from absl import app, flags
from ml_collections import config_flags

from pkd_jax.models import conv
from pkd_jax.perf import train_step as bench
from pkd_jax.provenance import provenance
from pkd_jax.train.cpu_flags import apply_cpu_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
flags.DEFINE_list("kinds", ["visual"], f"Step kinds among {bench.KINDS}.")
flags.DEFINE_list(
    "impls", ["xla", "auto"], "Conv impls for the layers built with impl='auto' (see jax_step)."
)
flags.DEFINE_integer("batch", None, "Clips per step; default: the config's data.batch_size.")
flags.DEFINE_integer("steps", 5, "Timed rounds (one step of every variant and of PyTorch each).")
flags.DEFINE_integer("warmup", 1, "Untimed steps of each variant (after compilation).")
flags.DEFINE_bool("torch", True, "Also time the PyTorch step.")
flags.DEFINE_bool("json", False, "One JSON line per kind instead of a table.")

_choose_impl = conv.choose_impl


def jax_step(config, kind: str, batch: dict, spec: str) -> torch_compare.JaxStep:
    """pkd_jax's step compiled with the "auto" layers resolved to `spec`: an impl, or "auto:MIB" / "split:MIB"
    for that impl with `conv.SPLIT_BYTES` set to MIB mebibytes (the split weight gradient's chunk budget)."""
    impl, _, mib = spec.partition(":")
    split_bytes = int(float(mib) * 2**20) if mib else conv.SPLIT_BYTES

    def forced(requested: str, *args, **kwargs) -> str:
        return _choose_impl(impl if requested == "auto" else requested, *args, **kwargs)

    saved = conv.SPLIT_BYTES
    conv.choose_impl, conv.SPLIT_BYTES = forced, split_bytes  # read by Conv while JaxStep traces and compiles
    try:
        return torch_compare.JaxStep(config, kind, batch)
    finally:
        conv.choose_impl, conv.SPLIT_BYTES = _choose_impl, saved


def rotated_times(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    names, times = list(steps), {name: [] for name in steps}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str]) -> None:
    del argv
    apply_cpu_flags(FLAGS.config.model.dtype)  # pkd_jax's own XLA:CPU flags, as its CLIs set them
    config = torch_compare.with_batch_size(FLAGS.config, FLAGS.batch)
    torch.set_num_threads(os.cpu_count() or 1)
    for kind in FLAGS.kinds:
        batch = bench.random_batch(config, kind, n_mels=64, audio_frames=100)
        steps: dict[str, Callable[[], None]] = {
            f"jax_{i}": jax_step(config, kind, batch, i) for i in FLAGS.impls
        }
        compile_s = {name: step.compile_s for name, step in steps.items()}
        if FLAGS.torch:
            steps["torch"] = torch_compare.TorchStep(config, kind, batch, channels_last=False)
        times = rotated_times(steps, FLAGS.steps, FLAGS.warmup)
        median = {name: statistics.median(t) for name, t in times.items()}
        first = f"jax_{FLAGS.impls[0]}"
        result = {
            "kind": kind,
            "batch_clips": config.data.batch_size,
            "clip_frames": config.data.clip_frames,
            "steps": FLAGS.steps,
            "median_s": median,
            "min_s": {name: min(t) for name, t in times.items()},
            "compile_s": compile_s,
            "ratio_to_first": {name: median[name] / median[first] for name in median},
            "ratio_to_torch": {name: median[name] / median["torch"] for name in median}
            if FLAGS.torch
            else {},
        }
        if FLAGS.json:
            print(json.dumps({**result, "provenance": provenance()}), flush=True)
            continue
        print(
            f"{kind}: {config.data.batch_size} clips x {config.data.clip_frames} frames, {FLAGS.steps} rounds"
        )
        for name in median:
            to_torch = f"  /torch {result['ratio_to_torch'][name]:.2f}" if FLAGS.torch else ""
            print(
                f"  {name:12} median {median[name]:7.3f} s  min {result['min_s'][name]:7.3f}  "
                f"/{first} {result['ratio_to_first'][name]:.2f}{to_torch}",
                flush=True,
            )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
