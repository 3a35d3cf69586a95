"""The train step of pkd_jax side by side with an equivalent PyTorch implementation, on the same batch.

    python benchmarks/torch_compare.py --config=configs/recola_student.py \
        [--kinds=visual,student_cached,teacher] [--batch=2] [--steps=5] [--warmup=2] [--json]

pkd_jax's side is the jitted step of `pkd_jax.bench` (`build_train` on a `random_batch`). The PyTorch
side (`pkd_jax.testing.torch_train.TorchStep`) builds the reference networks of
`pkd_jax/testing/torch_reference.py` at the config's sizes, the loss that `pkd_jax.losses.compose` computes
for the config (1 - CCC, the cosine distillation term and its gate), and Adam with the same per-module
learning rates, in `train()` mode with every core. One step is
forward + backward + optimizer update on both sides, input scaling (uint8 -> [0, 1]) included.

After separate warm-ups the timed steps alternate between the frameworks (the order flips every round),
so machine noise hits both alike. Per kind it reports median / min / max seconds of each and
`ratio` = jax median / torch median: <= 1.0 means pkd_jax is at least as fast.

With `--config.model.dtype=bfloat16` pkd_jax computes in bfloat16 (parameters float32) and PyTorch runs
its forward pass and loss under `torch.autocast("cpu", dtype=torch.bfloat16)`, its mixed-precision
counterpart. `--batch` overrides the config's clips per step; `--n_mels` / `--audio_frames` shape the teacher's audio
windows as in `pkd_jax.bench`; `--torch_channels_last` runs the PyTorch convolutions on NHWC tensors
instead of the default NCHW.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import torch
from absl import app, flags
from ml_collections import config_flags

from pkd_jax.perf import train_step as bench
from pkd_jax.provenance import provenance
from pkd_jax.testing.torch_train import TorchStep
from pkd_jax.train import sharding
from pkd_jax.train.cpu_flags import apply_cpu_flags

DEFAULT_KINDS = ("visual", "student_cached", "teacher")

FLAGS = flags.FLAGS

# ---------------------------------------------------------------------------------------------------
# pkd_jax's step and the interleaved measurement.


class JaxStep:
    """pkd_jax's compiled train step of `kind`; each call runs one step to completion."""

    def __init__(self, config: ml_collections.ConfigDict, kind: str, batch: dict[str, np.ndarray]):
        step, self.args = bench.build_train(config, kind, batch, sharding.make_mesh())
        self.params = sum(x.size for x in jax.tree.leaves(self.args[0].params))
        start = time.perf_counter()
        self.compiled = step.lower(*self.args).compile()
        self.compile_s = time.perf_counter() - start
        self.metrics: dict[str, Any] = {}

    def __call__(self) -> None:
        state, self.metrics = self.compiled(*self.args)
        jax.block_until_ready((state, self.metrics))
        self.args = (state, *self.args[1:])  # the state was donated: feed the new one back in

    @property
    def loss(self) -> float:
        return float(self.metrics["loss"]) if self.metrics else float("nan")


def _timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved_times(
    first: Callable[[], None], second: Callable[[], None], *, steps: int, warmup: int
) -> tuple[list[float], list[float]]:
    """`warmup` untimed steps of each (all of `first`'s, then `second`'s), then `steps` timed rounds of
    one step each; the order within a round alternates so neither always runs right after the other."""
    for _ in range(warmup):
        first()
    for _ in range(warmup):
        second()
    times_a, times_b = [], []
    for i in range(steps):
        if i % 2 == 0:
            times_a.append(_timed(first))
            times_b.append(_timed(second))
        else:
            times_b.append(_timed(second))
            times_a.append(_timed(first))
    return times_a, times_b


def _summary(prefix: str, times: list[float], frames: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        f"{prefix}_step_s_median": median,
        f"{prefix}_step_s_min": min(times),
        f"{prefix}_step_s_max": max(times),
        f"{prefix}_frames_per_s": frames / median,
    }


def with_batch_size(config: ml_collections.ConfigDict, batch: int | None) -> ml_collections.ConfigDict:
    """An unlocked copy of `config` with `batch` clips per step (unchanged when None)."""
    c = ml_collections.ConfigDict(config.to_dict())
    if batch is not None:
        if batch < 1:
            raise ValueError(f"--batch={batch}: need at least one clip")
        c.data.batch_size = batch
    return c


def compare(
    config: ml_collections.ConfigDict,
    kinds: list[str],
    *,
    steps: int,
    warmup: int,
    n_mels: int = 64,
    audio_frames: int = 100,
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    """One result dict per step kind: both frameworks' step times and their ratio."""
    unknown = set(kinds) - set(bench.KINDS)
    if unknown:
        raise ValueError(f"unknown step kinds {sorted(unknown)}; choose among {bench.KINDS}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    torch.set_num_threads(os.cpu_count() or 1)
    frames = config.data.batch_size * config.data.clip_frames
    results = []
    for kind in kinds:
        batch = bench.random_batch(config, kind, n_mels=n_mels, audio_frames=audio_frames)
        jax_step = JaxStep(config, kind, batch)
        torch_step = TorchStep(config, kind, batch, channels_last)
        jax_times, torch_times = interleaved_times(jax_step, torch_step, steps=steps, warmup=warmup)
        result = {
            "kind": kind,
            "batch_clips": config.data.batch_size,
            "clip_frames": config.data.clip_frames,
            "face_size": config.data.face_size,
            "dtype": config.model.dtype,
            "steps": steps,
            "warmup": warmup,
            "jax_platform": jax.devices()[0].platform,
            "jax_devices": jax.device_count(),
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "torch_channels_last": channels_last,
            "jax_params": jax_step.params,
            "torch_params": torch_step.num_params(),
            "jax_compile_s": jax_step.compile_s,
            **_summary("jax", jax_times, frames),
            **_summary("torch", torch_times, frames),
            "jax_loss": jax_step.loss,
            "torch_loss": float(torch_step.loss),
        }
        result["ratio"] = result["jax_step_s_median"] / result["torch_step_s_median"]
        results.append(result)
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'kind':16} {'jax median':>10} {'min':>7} {'max':>7} {'torch median':>12} {'min':>7} {'max':>7} "
        f"{'ratio':>6} {'jax compile':>11}"
    )
    rows = [header]
    for r in results:
        rows.append(
            f"{r['kind']:16} {r['jax_step_s_median']:10.3f} {r['jax_step_s_min']:7.3f} "
            f"{r['jax_step_s_max']:7.3f} {r['torch_step_s_median']:12.3f} {r['torch_step_s_min']:7.3f} "
            f"{r['torch_step_s_max']:7.3f} {r['ratio']:6.2f} {r['jax_compile_s']:11.1f}"
        )
    r = results[0] if results else None
    if r:
        rows.append(
            f"(seconds per train step; {r['batch_clips']} clips x {r['clip_frames']} frames at "
            f"{r['face_size']}px, {r['steps']} interleaved steps after {r['warmup']} warm-up; ratio = jax / "
            f"torch median; torch threads {r['torch_threads']})"
        )
    return "\n".join(rows)


def define_flags() -> None:
    """The command-line flags; defined only when run as a program, so imports never clash."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
    flags.DEFINE_list("kinds", list(DEFAULT_KINDS), f"Step kinds among {bench.KINDS}.")
    flags.DEFINE_integer("batch", None, "Clips per step; default: the config's data.batch_size.")
    flags.DEFINE_integer("steps", 5, "Timed steps of each framework.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps of each framework (after compilation).")
    flags.DEFINE_integer("n_mels", 64, "Mel bins of the audio input.")
    flags.DEFINE_integer("audio_frames", 100, "Spectrogram frames per audio window (1 s at 10 ms).")
    flags.DEFINE_bool("json", False, "Print one JSON line per kind instead of a table.")
    flags.DEFINE_bool("torch_channels_last", False, "PyTorch convolutions on channels-last (NHWC) tensors.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    apply_cpu_flags(FLAGS.config.model.dtype)  # pkd_jax's own XLA:CPU flags, as its CLIs set them
    config = with_batch_size(FLAGS.config, FLAGS.batch)
    results = compare(
        config, FLAGS.kinds, steps=FLAGS.steps, warmup=FLAGS.warmup, n_mels=FLAGS.n_mels,
        audio_frames=FLAGS.audio_frames, channels_last=FLAGS.torch_channels_last,
    )  # fmt: skip
    if FLAGS.json:
        for r in results:
            record = provenance()
            record["packages"]["torch"] = torch.__version__
            print(json.dumps({**r, "provenance": record}), flush=True)
    else:
        print(format_table(results))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)
