"""The gate sweep's library: gate contexts and thresholds tabulated from trained teachers, and students
trained over a grid, on dev only. The command line and what it writes: `pkd_jax.experiments.gate_sweep`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from pkd_jax import metrics
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.experiments import runner, stats
from pkd_jax.experiments.report import distilled_fraction
from pkd_jax.precompute import gate_track
from pkd_jax.precompute.teacher_cache import compute_teacher_cache
from pkd_jax.provenance import provenance, provenance_lines
from pkd_jax.train import sharding

BATCH_DRAWS = 2000  # simulated batches for the "batch" context's gamma distribution


def student_config(
    base: ml_collections.ConfigDict, seed: int, workdir: Path, entry: dict[str, Any], shares: dict[str, Any]
) -> ml_collections.ConfigDict:
    """The student of one grid entry (`context`, `window`, `theta` or `quantile`) and seed.

    A quantile in the "batch" context, which the loop cannot resolve before training, becomes the
    absolute theta at that quantile of the simulated batch gammas of the same teacher (`shares`).
    """
    config = runner.method_config(base, "student", seed, workdir)
    config.unlock()
    config.loss.gate = "paper"
    config.loss.gate_context = entry["context"]
    config.loss.gate_window_frames = int(entry.get("window", config.loss.gate_window_frames))
    config.loss.theta = float(entry.get("theta", config.loss.theta))
    config.loss.theta_quantile = float(entry.get("quantile", 0.0))
    if entry["context"] == "batch" and entry.get("quantile"):
        config.loss.theta = shares["batch"][f"theta@q{entry['quantile']:g}"]
        config.loss.theta_quantile = 0.0
    config.lock()
    return config


def entry_name(entry: dict[str, Any]) -> str:
    where = f"window{entry['window']}" if entry["context"] == "window" else entry["context"]
    threshold = f"q{entry['quantile']:g}" if entry.get("quantile") else f"theta{entry.get('theta', 0.2):g}"
    return f"{where}_{threshold}"


def teacher_gammas(
    config: ml_collections.ConfigDict, windows: tuple[int, ...], seed: int
) -> dict[str, np.ndarray]:
    """gamma of every training clip start (uniform draws) per context, from one seed's teacher."""
    from pkd_jax.workdir.trained import load_teacher

    mesh = sharding.make_mesh()
    teacher, variables, _ = load_teacher(config, mesh)
    variables = sharding.local_view(variables)
    cache = Cache(config.data.cache)
    targets = build.target_indices(config)
    dtype = build.compute_dtype(config)
    clip = config.data.clip_frames
    # One trunk pass gives both the clip predictions and the track, as in the loop's cached mode.
    teacher_cache = compute_teacher_cache(
        teacher, variables, cache, clip_frames=clip, missing_face=config.data.missing_face,
        audio_window_s=config.data.audio_window_s, dtype=dtype, with_track=True,
    )  # fmt: skip
    out = {}
    for w in windows:
        per_video = gate_track.gammas_from_track(
            teacher_cache["teacher_track"], cache, targets, clip_frames=clip, window_frames=w
        )
        out[f"window{w}"] = np.concatenate(list(per_video.values()))
    cached = teacher_cache["teacher_pred"]
    clip_values, pool = [], []
    for video_id, clip_pred in cached.items():
        video = cache.video(video_id)
        labels = np.asarray(video.labels)[:, list(targets)]
        mask = np.asarray(video.label_mask)
        clip_values.append(gate_track.clip_gamma(clip_pred, labels, mask))
        index = np.arange(len(clip_pred))[:, None] + np.arange(clip)[None, :]
        pool.append((clip_pred, labels[index], mask[index]))
    out["clip"] = np.concatenate(clip_values)
    out["batch"] = _batch_gammas(pool, config.data.batch_size, seed)
    return out


def _batch_gammas(
    pool: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], batch_size: int, seed: int
) -> np.ndarray:
    """1 - CCC over the flattened frames of `batch_size` uniformly drawn clips, for BATCH_DRAWS batches."""
    preds = np.concatenate([p for p, _, _ in pool])
    labels = np.concatenate([y for _, y, _ in pool])
    masks = np.concatenate([m for _, _, m in pool])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BATCH_DRAWS):
        pick = rng.integers(len(preds), size=batch_size)
        w = masks[pick].reshape(-1)
        x = preds[pick].reshape(-1, preds.shape[-1])
        y = labels[pick].reshape(-1, labels.shape[-1])
        values.append(np.mean([1.0 - metrics.ccc_np(x[:, k], y[:, k], w) for k in range(x.shape[1])]))
    return np.asarray(values)


def share_rows(
    gammas: dict[str, np.ndarray], sweep: ml_collections.ConfigDict
) -> dict[str, dict[str, float]]:
    """Per context: quantiles of gamma, the distilled share at each absolute theta, theta at each quantile."""
    rows = {}
    for context, values in gammas.items():
        row = {f"gamma_q{q}": float(np.quantile(values, q / 100)) for q in (5, 50, 95)}
        row.update({f"share@{t:g}": float(np.mean(values <= t)) for t in sweep.thetas})
        row.update({f"theta@q{q:g}": float(np.quantile(values, q)) for q in sweep.quantiles})
        rows[context] = row
    return rows


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains what is missing, tabulates, and writes `sweep.json` and `sweep.md`."""
    from pkd_jax.train.loop import run

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runner.enable_compilation_cache(workdir)
    config = runner.prepare_experiment(config, workdir)  # as the runner's, so its runs are reused as they are
    sweep = config.experiment.sweep
    seeds = tuple(config.experiment.seeds)
    scores: dict[str, dict[int, dict[str, Any]]] = {}
    shares: dict[int, Any] = {}

    def train(name: str, method_config: ml_collections.ConfigDict, out: Path) -> dict[str, Any]:
        if not (out / "eval.json").is_file():
            logging.info("Training %s, seed %d.", name, method_config.seed)
            run(method_config, out)
        result = json.loads((out / "eval.json").read_text())
        result["distilled_fraction"] = distilled_fraction(out)
        return result

    for seed in seeds:
        for method in ("teacher", "visual", "student_nogate"):
            out = runner.run_dir(workdir, method, seed)
            scores.setdefault(method, {})[seed] = train(
                method, runner.method_config(config, method, seed, workdir), out
            )
        student = runner.method_config(config, "student", seed, workdir)
        shares[seed] = share_rows(teacher_gammas(student, tuple(sweep.windows), seed), sweep)
        for entry in sweep.grid:
            name = entry_name(entry)
            out = workdir / "runs" / "sweep" / name / f"seed_{seed}"
            scores.setdefault(name, {})[seed] = train(
                name, student_config(config, seed, workdir, entry, shares[seed]), out
            )
    results = {
        "seeds": list(seeds),
        "shares": shares,
        "scores": scores,
        "grid": [dict(e) for e in sweep.grid],
        "provenance": provenance(),  # this invocation's; each run's eval carries its own
    }
    (workdir / "sweep.json").write_text(json.dumps(results, indent=2, default=float))
    (workdir / "sweep.md").write_text(markdown(results, config))
    print((workdir / "sweep.md").read_text())
    return results


def _dev(result: dict[str, Any], target: str) -> float:
    return float(result["raw"]["mean_over_videos"][target])


def markdown(results: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    """The two tables: distilled share from the teacher alone, and students' dev CCC against the baseline."""
    seeds = results["seeds"]
    shares = results["shares"]
    contexts = list(shares[seeds[0]])
    columns = list(shares[seeds[0]][contexts[0]])
    lines = [
        "# Gate sweep (dev only)",
        "",
        f"Seeds {seeds}; clips of {config.data.clip_frames} frames, batches of {config.data.batch_size}.",
        "",
        "## Share of training clips the paper gate distils (gamma <= theta), from each teacher alone",
        "",
        "Mean over seeds (min-max in brackets). gamma = 1 - CCC(teacher, labels) in the context; `theta@q` is "
        "the threshold a teacher-relative quantile gives.",
        "",
        f"| context | {' | '.join(columns)} |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for context in contexts:
        cells = []
        for column in columns:
            values = [shares[s][context][column] for s in seeds]
            cells.append(f"{np.mean(values):.3f} [{min(values):.2f}, {max(values):.2f}]")
        lines.append(f"| {context} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Students: dev CCC (raw, mean over videos), share distilled, paired difference from the baseline",
        "",
        "| run | valence | arousal | share distilled | valence - baseline | arousal - baseline |",
        "|---|---|---|---|---|---|",
    ]
    scores = results["scores"]
    for name, runs in scores.items():
        if name == "teacher":
            continue
        cells = []
        for target in ("valence", "arousal"):
            values = [_dev(runs[s], target) for s in seeds]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        share = [runs[s]["distilled_fraction"] for s in seeds if runs[s]["distilled_fraction"] is not None]
        cells.append(f"{np.mean(share):.2f}" if share else "-")
        for target in ("valence", "arousal"):
            if name == "visual":
                cells.append("-")
                continue
            diff = stats.paired_difference(
                [_dev(runs[s], target) for s in seeds], [_dev(scores["visual"][s], target) for s in seeds]
            )
            cells.append(stats.describe(diff))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    if "provenance" in results:
        runs = [r for by_seed in scores.values() for r in by_seed.values()]
        lines += ["", *provenance_lines(results["provenance"], runs)]
    return "\n".join(lines) + "\n"
