"""Benchmark the train and evaluation steps of a config on random inputs of the configured shapes.

    python -m pkd_jax.bench --config=configs/recola_student.py --what=train|eval|pipeline|preprocess [--json]

`--what=train|eval`: for each step kind (teacher, visual, student with the teacher online or cached) it
reports the compile time separately, then the median / min / max time of `--steps` timed steps after
`--warmup` steps (each ended with `block_until_ready`), frames per second, XLA's FLOP count of the
compiled step cross-checked against an analytic count (2 x the MACs of every convolution and matrix
product in the step's jaxpr), the achieved FLOP/s and the MFU against the device's peak (`pkd_jax.peak`:
a measured matmul peak on CPU, data-sheet peaks on GPUs and TPUs), and XLA's memory analysis.
`--what=pipeline` times the training input pipeline (clips with and without audio), `--what=preprocess`
the preprocessing of a corpus, both on the config's corpus or a generated synthetic one (`pkd_jax.data_bench`).
`--json` prints one machine-readable line per result.

    --profile_dir=DIR   a jax.profiler trace of the timed steps (TensorBoard / XProf), one annotated
                        step each, plus the most expensive operations per step (`top_ops`)
    --dump_hlo=DIR      the optimized HLO of every compiled step, one file per kind
    --complexity        parameters and per-frame MACs of student and teacher (paper Table 3) instead
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pkd_jax import complexity, peak, profile_summary
from pkd_jax.experiments.report import complexity_table
from pkd_jax.train import build, sharding
from pkd_jax.train.state import create_state, make_optimizer
from pkd_jax.train.steps import make_stream_step, make_train_step

KINDS = ("teacher", "visual", "student_online", "student_cached")


def random_batch(config: ml_collections.ConfigDict, kind: str, *, n_mels: int, audio_frames: int) -> dict:
    """A batch of the configured shapes with random content (timing does not depend on values)."""
    rng = np.random.default_rng(0)
    b, t, s = config.data.batch_size, config.data.clip_frames, config.data.face_size
    k = len(build.target_indices(config))
    # Strong setting: [B, L] sub-sequences of `clip_frames` frames each, one label and audio window per step.
    steps = (config.data.window_subsequences, t) if build.is_windowed(config) else (t,)
    t = steps[0]
    batch = {
        "frames": rng.integers(0, 256, (b, *steps, s, s, 3), dtype=np.uint8),
        "labels": rng.uniform(-1, 1, (b, t, 2)).astype(np.float32),
        "label_mask": np.ones((b, t), np.float32),
        "frame_mask": np.ones((b, t), np.float32),
    }
    if kind in ("teacher", "student_online"):
        batch["audio"] = rng.normal(size=(b, t, n_mels, audio_frames, 1)).astype(np.float32)
    if kind.startswith("student"):
        batch["gate_gamma"] = rng.uniform(0, 1, b).astype(np.float32)  # the window context's input
    if kind == "student_cached":
        batch["teacher_pred"] = rng.uniform(-1, 1, (b, t, k)).astype(np.float32)
        batch["teacher_emb"] = rng.normal(size=(b, t, config.model.fused_features[-1])).astype(np.float32)
    return batch


def _stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.to_dict())
    c.stage = stage
    return c


def build_train(config: ml_collections.ConfigDict, kind: str, batch: dict, mesh) -> tuple[Any, tuple]:
    """The jitted train step of `kind` and its arguments, placed on the mesh."""
    stage = "student" if kind.startswith("student") else kind
    c = _stage_config(config, stage)
    model = build.build_model(c)
    dtype = build.compute_dtype(c)
    variables = build.init_variables(model, batch, 0)
    tx = make_optimizer(c.optim, variables["params"])
    state = sharding.replicate(create_state(variables, tx, jax.random.key(0)), mesh)
    teacher = teacher_variables = None
    mode = None
    if stage == "student":
        mode = kind.split("_")[1]
        if mode == "online":
            teacher = build.build_teacher(_stage_config(config, "teacher"))
            teacher_variables = sharding.replicate(build.init_variables(teacher, batch, 1), mesh)
    loss_fn = build.build_loss(c)
    step = make_train_step(
        model, tx, loss_fn, targets=build.target_indices(c), dtype=dtype, teacher=teacher, teacher_mode=mode
    )
    return jax.jit(step, donate_argnums=0), (state, sharding.shard_batch(batch, mesh), teacher_variables)


def build_eval(config: ml_collections.ConfigDict, kind: str, batch: dict, mesh) -> tuple[Any, tuple]:
    """The jitted streaming (evaluation) step of the model `kind` trains."""
    stage = "teacher" if kind == "teacher" else "student"
    c = _stage_config(config, stage)
    model = build.build_model(c)
    variables = sharding.replicate(build.init_variables(model, batch, 0), mesh)
    inputs = sharding.shard_batch({k: v for k, v in batch.items() if k in ("frames", "audio")}, mesh)
    carry = model.zero_carry(batch["frames"].shape[0])
    return jax.jit(make_stream_step(model, build.compute_dtype(c))), (variables, inputs, carry)


def time_step(
    step: Any,
    args: tuple,
    *,
    steps: int,
    warmup: int,
    donated: bool,
    name: str = "step",
    profile_dir: str | None = None,
    dump_hlo: str | None = None,
    top_ops: int = 15,
) -> dict[str, Any]:
    """Compile time, then per-step wall times after warm-up, plus XLA's cost and memory analyses."""
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    if dump_hlo:
        Path(dump_hlo).mkdir(parents=True, exist_ok=True)
        (Path(dump_hlo) / f"{name}.hlo.txt").write_text(compiled.as_text())
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    times = []
    for i in range(warmup + steps):
        if profile_dir and i == warmup:
            jax.profiler.start_trace(str(Path(profile_dir) / name))
        start = time.perf_counter()
        with jax.profiler.StepTraceAnnotation(name, step_num=i):
            out = compiled(*args)
            jax.block_until_ready(out)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if donated:  # the state was donated: feed the new one back in
            args = (out[0], *args[1:])
    if profile_dir:
        jax.profiler.stop_trace()
    flops = float(cost.get("flops", 0.0))
    analytic = 2.0 * complexity.count_macs(step, *args)  # convolutions and matmuls, forward and backward
    median = statistics.median(times)
    extra = {}
    if profile_dir:
        extra["top_ops"] = profile_summary.top_ops(
            Path(profile_dir) / name, compiled.as_text(), steps, top_ops
        )
    return {
        "compile_s": compile_s,
        "step_s_median": median,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "flops_per_step": flops,
        "analytic_flops_per_step": analytic,
        "xla_over_analytic_flops": flops / analytic if analytic else None,
        "achieved_flops_per_s": flops / median if median else 0.0,
        "memory_bytes": {
            "argument": getattr(memory, "argument_size_in_bytes", None),
            "output": getattr(memory, "output_size_in_bytes", None),
            "temp": getattr(memory, "temp_size_in_bytes", None),
        },
        **extra,
    }


def benchmark(
    config: ml_collections.ConfigDict, what: str, kinds: list[str], **kw: Any
) -> list[dict[str, Any]]:
    """One result dict per step kind."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown step kinds {sorted(unknown)}; choose among {KINDS}")
    mesh = sharding.make_mesh()
    results = []
    for kind in kinds:
        batch = random_batch(config, kind, n_mels=kw["n_mels"], audio_frames=kw["audio_frames"])
        if what == "eval":
            if kind == "teacher" and "audio" not in batch:
                batch = random_batch(config, "teacher", n_mels=kw["n_mels"], audio_frames=kw["audio_frames"])
            step, args = build_eval(config, kind, batch, mesh)
        else:
            step, args = build_train(config, kind, batch, mesh)
        timing = time_step(
            step, args, steps=kw["steps"], warmup=kw["warmup"], donated=what == "train",
            name=f"{what}_{kind}", profile_dir=kw.get("profile_dir"), dump_hlo=kw.get("dump_hlo"),
            top_ops=kw.get("top_ops", 15),
        )  # fmt: skip
        peak_flops, peak_source = peak.device_peak(config.model.dtype, kw.get("peak_flops"))
        frames = config.data.batch_size * config.data.clip_frames * (config.data.window_subsequences or 1)
        results.append(
            {
                "what": what,
                "kind": kind,
                "batch_clips": config.data.batch_size,
                "clip_frames": config.data.clip_frames,
                "face_size": config.data.face_size,
                "dtype": config.model.dtype,
                "devices": jax.device_count(),
                "platform": jax.devices()[0].platform,
                **timing,
                "frames_per_s": frames / timing["step_s_median"],
                "peak_flops_per_s": peak_flops,
                "peak_source": peak_source,
                "mfu": timing["achieved_flops_per_s"] / peak_flops,
            }
        )
    return results


def data_benchmark(config: ml_collections.ConfigDict, what: str, **kw: Any) -> list[dict[str, Any]]:
    """`--what=preprocess|pipeline` on the config's corpus, or on a synthetic one under `corpus_root`."""
    from pkd_jax import data_bench

    dataset, src = data_bench.corpus_for(
        config, kw["corpus_root"], train=kw["corpus_train"], dev=kw["corpus_dev"],
        seconds=kw["corpus_seconds"], frame_size=kw["corpus_frame_size"],
    )  # fmt: skip
    if what == "preprocess":
        result = data_bench.bench_preprocess(
            dataset, src, build.preprocess_config(config), workers=kw["workers"]
        )
        return [result]
    from pkd_jax.train.loop import open_cache

    c = ml_collections.ConfigDict(config.to_dict())
    c.data.dataset, c.data.root = dataset, str(src)
    cache = open_cache(c)
    results = []
    for with_audio in (False, True):
        pipeline = build.pipeline_config(
            config, batch_size=config.data.batch_size, with_audio=with_audio, train=True
        )
        r = data_bench.bench_pipeline(cache, pipeline, batches=kw["batches"])
        results.append(
            {
                "what": "pipeline",
                "kind": "teacher" if with_audio else "student",
                "cache": str(cache.root),
                **r,
            }
        )
    return results


def format_data_table(results: list[dict[str, Any]]) -> str:
    """`--what=preprocess|pipeline` results, one line each."""
    rows = []
    for r in results:
        if r["what"] == "preprocess":
            per_cpu = f", {r['frames_per_cpu_s']:.1f} per CPU-second" if r["frames_per_cpu_s"] else ""
            face = r["face_detection_frames_per_s"]
            rows.append(
                f"preprocess {r['videos']} videos, {r['frames']} frames in {r['wall_s']:.1f} s: "
                f"{r['frames_per_s']:.1f} frames/s{per_cpu}; face detection {face:.1f} frames/s "
                f"({100 * r['face_detection_share']:.0f}% of the time), faces in "
                f"{100 * r['face_found_fraction']:.1f}% of frames; failed: {r['failed_videos'] or 'none'}"
            )
        else:
            rows.append(
                f"pipeline {r['kind']:8} clips ({'with' if r['with_audio'] else 'no'} audio): "
                f"{r['frames_per_s']:.0f} frames/s, median {r['batch_ms_median']:.1f} ms per batch of "
                f"{r['frames_per_batch']} frames"
            )
    return "\n".join(rows)


def format_table(results: list[dict[str, Any]]) -> str:
    """The step timings as a table, then the peak used for MFU and any profile summaries."""
    header = (
        f"{'kind':16} {'compile s':>9} {'median s':>9} {'min s':>8} {'max s':>8} {'frames/s':>9} "
        f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'MFU':>6}"
    )
    rows = [header]
    for r in results:
        rows.append(
            f"{r['kind']:16} {r['compile_s']:9.1f} {r['step_s_median']:9.3f} {r['step_s_min']:8.3f} "
            f"{r['step_s_max']:8.3f} {r['frames_per_s']:9.1f} {r['flops_per_step'] / 1e9:11.2f} "
            f"{r['achieved_flops_per_s'] / 1e9:8.1f} {100 * r['mfu']:5.1f}%"
        )
    if results:
        rows.append(f"peak {results[0]['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({results[0]['peak_source']})")
    for r in results:
        if "top_ops" in r:
            rows.append(f"\n{r['what']} {r['kind']}: " + profile_summary.format_top_ops(r["top_ops"]))
    return "\n".join(rows)


def define_flags() -> None:
    """The command-line flags; defined only when run as a program, so imports never clash."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
    flags.DEFINE_enum("what", "train", ["train", "eval", "pipeline", "preprocess"], "What to time.")
    flags.DEFINE_list("kinds", list(KINDS), f"Step kinds among {KINDS}.")
    flags.DEFINE_integer("steps", 10, "Timed steps.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    flags.DEFINE_integer("n_mels", 64, "Mel bins of the audio input.")
    flags.DEFINE_integer("audio_frames", 100, "Spectrogram frames per audio window (1 s at 10 ms).")
    flags.DEFINE_bool("json", False, "Print one JSON line per kind instead of a table.")
    flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of the timed steps here.")
    flags.DEFINE_string("dump_hlo", None, "Write the optimized HLO of each step here.")
    flags.DEFINE_bool("complexity", False, "Report parameters and MACs (Table 3) instead.")
    flags.DEFINE_integer("top_ops", 15, "With --profile_dir: how many of the costliest operations to list.")
    flags.DEFINE_float("peak_flops", None, "Peak FLOP/s for MFU, instead of the measured or data-sheet peak.")
    flags.DEFINE_string("corpus_root", "/tmp/pkd_jax_bench", "pipeline/preprocess: synthetic corpus cache.")
    flags.DEFINE_integer("corpus_train", 2, "pipeline/preprocess: synthetic training recordings.")
    flags.DEFINE_integer("corpus_dev", 1, "pipeline/preprocess: synthetic development recordings.")
    flags.DEFINE_float("corpus_seconds", 20.0, "pipeline/preprocess: seconds per synthetic recording.")
    flags.DEFINE_integer("corpus_frame_size", 256, "pipeline/preprocess: synthetic frame side in pixels.")
    flags.DEFINE_integer("workers", 1, "preprocess: worker processes (1 gives per-core numbers).")
    flags.DEFINE_integer("batches", 40, "pipeline: timed batches.")


def main(argv: list[str]) -> None:
    del argv
    if flags.FLAGS.complexity:
        rows = complexity_table(flags.FLAGS.config)
        if flags.FLAGS.json:
            print(json.dumps({"what": "complexity", **rows}))
        else:
            for name, row in rows.items():
                print(f"{name:28} {row['params_M']:8.2f} M params {row['GMACs_per_frame']:8.3f} GMACs/frame")
        return
    if flags.FLAGS.what in ("pipeline", "preprocess"):
        names = (
            "corpus_root",
            "corpus_train",
            "corpus_dev",
            "corpus_seconds",
            "corpus_frame_size",
            "workers",
            "batches",
        )
        results = data_benchmark(
            flags.FLAGS.config, flags.FLAGS.what, **{n: flags.FLAGS[n].value for n in names}
        )
        print("\n".join(json.dumps(r) for r in results) if flags.FLAGS.json else format_data_table(results))
        return
    results = benchmark(
        flags.FLAGS.config, flags.FLAGS.what, flags.FLAGS.kinds, steps=flags.FLAGS.steps, warmup=flags.FLAGS.warmup,
        n_mels=flags.FLAGS.n_mels, audio_frames=flags.FLAGS.audio_frames, profile_dir=flags.FLAGS.profile_dir,
        dump_hlo=flags.FLAGS.dump_hlo, top_ops=flags.FLAGS.top_ops, peak_flops=flags.FLAGS.peak_flops,
    )  # fmt: skip
    if flags.FLAGS.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(format_table(results))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)
