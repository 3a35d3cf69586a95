"""Timing one compiled train or evaluation step of a config on random inputs of its shapes.

For each step kind (teacher, visual, student with the teacher online or cached, and the `_frozen`
variants that train from frozen trunks' cached features, `pkd_jax.precompute.trunk_features`): compile time apart,
then median / min / max of timed steps, frames per second, XLA's FLOP count cross-checked against an
analytic count (`complexity.count_macs`), achieved FLOP/s and MFU against the device's peak (`peak`), and
XLA's memory analysis; optionally a profiler trace with the costliest operations (`profile_summary`).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from pkd_jax.config import build
from pkd_jax.perf import complexity, peak, profile_summary
from pkd_jax.train import sharding
from pkd_jax.train.state import create_state, make_optimizer
from pkd_jax.train.steps import make_stream_step, make_train_step

# A frozen kind is its base kind with frozen trunks (both of the teacher's) whose cached features stand for
# the frames and audio: the step runs only the recurrent layer and the heads.
FROZEN_KINDS = {"teacher_frozen": "teacher", "visual_frozen": "visual", "student_frozen": "student_cached"}
KINDS = ("teacher", "visual", "student_online", "student_cached", *FROZEN_KINDS)


def base_kind(kind: str) -> str:
    """The step kind a frozen kind trains from features (itself for the others)."""
    return FROZEN_KINDS.get(kind, kind)


def trunk_feature_sizes(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """Sizes of the visual and audio trunks' features (per frame, or per clip with windows)."""
    teacher = build.build_teacher(_stage_config(config, "teacher"))
    frames, audio, _ = build.example_inputs(config, teacher=True)
    key = jax.random.key(0)
    visual = jax.eval_shape(lambda: teacher.init_with_output(key, frames, method="trunk_visual")[0])
    sound = jax.eval_shape(lambda: teacher.init_with_output(key, audio, method="trunk_audio")[0])
    return int(visual.shape[-1]), int(sound.shape[-1])


def random_batch(
    config: ml_collections.ConfigDict, kind: str, *, n_mels: int, audio_frames: int, seed: int = 0
) -> dict:
    """A batch of the configured shapes with random content (timing does not depend on values); another
    `seed` draws other content of the same shapes."""
    if kind in FROZEN_KINDS:
        batch = random_batch(config, base_kind(kind), n_mels=n_mels, audio_frames=audio_frames, seed=seed)
        b, t = batch["labels"].shape[:2]
        visual, sound = trunk_feature_sizes(config)
        rng = np.random.default_rng(seed + 1)
        batch["visual_features"] = rng.normal(size=(b, t, visual)).astype(np.float32)
        del batch["frames"]
        if "audio" in batch:
            batch["audio_features"] = rng.normal(size=(b, t, sound)).astype(np.float32)
            del batch["audio"]
        return batch
    rng = np.random.default_rng(seed)
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
        batch["gate_gamma_0"] = rng.uniform(0, 1, b).astype(np.float32)  # the window context's input
    if kind == "student_cached":
        batch["teacher_pred_0"] = rng.uniform(-1, 1, (b, t, k)).astype(np.float32)
        batch["teacher_emb_0"] = rng.normal(size=(b, t, config.model.fused_features[-1])).astype(np.float32)
    return batch


def _stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.to_dict())
    c.stage = stage
    return c


def build_train(
    config: ml_collections.ConfigDict, kind: str, batch: dict, mesh, **kw: int
) -> tuple[Any, tuple]:
    """The jitted train step of `kind` and its arguments, placed on the mesh."""
    stage = "student" if kind.startswith("student") else base_kind(kind)
    c = _stage_config(config, stage)
    if kind in FROZEN_KINDS:
        c.model.freeze_visual_cnn = c.model.freeze_audio_cnn = True
        c.model.frozen_features = "cached"
    model = build.build_model(c)
    dtype = build.compute_dtype(c)
    init_batch = batch if "frames" in batch else random_batch(config, base_kind(kind), **kw)
    variables = build.init_variables(model, init_batch, 0)
    tx = make_optimizer(
        c.optim, variables["params"], total_steps=c.train.num_steps, frozen_groups=build.frozen_trunks(c)
    )
    state = sharding.replicate(create_state(variables, tx, jax.random.key(0)), mesh)
    teachers: tuple = ()
    teacher_variables: tuple = ()
    mode = None
    if stage == "student":
        mode = base_kind(kind).split("_")[1]
        if mode == "online":
            teacher = build.build_teacher(_stage_config(config, "teacher"))
            teachers = (teacher,)
            teacher_variables = (sharding.replicate(build.init_variables(teacher, batch, 1), mesh),)
    loss_fn = build.build_loss(c)
    step = make_train_step(
        model, tx, loss_fn, targets=build.target_indices(c), dtype=dtype, teachers=teachers, teacher_mode=mode
    )
    return jax.jit(step, donate_argnums=0), (state, sharding.shard_batch(batch, mesh), teacher_variables)


def build_eval(config: ml_collections.ConfigDict, kind: str, batch: dict, mesh) -> tuple[Any, tuple]:
    """The jitted streaming (evaluation) step of the model `kind` trains."""
    stage = "teacher" if base_kind(kind) == "teacher" else "student"
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
        shapes = {"n_mels": kw["n_mels"], "audio_frames": kw["audio_frames"]}
        if what == "eval":  # evaluation runs on frames: a frozen kind evaluates like its base kind
            batch = random_batch(config, base_kind(kind), **shapes)
            if base_kind(kind) == "teacher" and "audio" not in batch:
                batch = random_batch(config, "teacher", **shapes)
            step, args = build_eval(config, kind, batch, mesh)
        else:
            batch = random_batch(config, kind, **shapes)
            step, args = build_train(config, kind, batch, mesh, **shapes)
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
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                **timing,
                "frames_per_s": frames / timing["step_s_median"],
                "peak_flops_per_s": peak_flops,
                "peak_source": peak_source,
                "mfu": timing["achieved_flops_per_s"] / peak_flops,
            }
        )
    return results


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
