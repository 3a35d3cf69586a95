"""The paper runner's line figures: Figure 4 (predictions against the gold standard of one dev video) and
the training curves (training loss and dev CCC per target) of every method over all seeds."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from pkd_jax.experiments import plateau
from pkd_jax.experiments.plateau import Curve
from pkd_jax.workdir.metric_writer import read_metrics


def _read_predictions(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    time_s = np.array([float(r["time_s"]) for r in rows])
    preds = {k[5:]: np.array([float(r[k]) for r in rows]) for k in rows[0] if k.startswith("pred_")}
    gold = {k[5:]: np.array([float(r[k]) for r in rows]) for k in rows[0] if k.startswith("gold_")}
    return time_s, preds, gold


def _last_predictions(run: Path, video: str) -> Path | None:
    steps = sorted((int(p.name) for p in (run / "predictions").glob("*") if p.name.isdigit()), reverse=True)
    for step in steps:
        path = run / "predictions" / str(step) / f"{video}.csv"
        if path.is_file():
            return path
    return None


def figure4(workdir: Path, config: ml_collections.ConfigDict, seed: int, out: Path) -> None:
    """Predictions of teacher, baseline and student against the gold standard on one dev video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    video = config.experiment.figure_video
    curves = {}
    gold = time_s = None
    for method in ("teacher", "visual", "student", "student_nogate"):
        path = _last_predictions(workdir / "runs" / method / f"seed_{seed}", video)
        if path is not None:
            time_s, curves[method], gold = _read_predictions(path)
    if not curves:
        return
    assert gold is not None  # read with every curve
    targets = list(gold)
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 3.2 * len(targets)), sharex=True, squeeze=False)
    styles = {"teacher": ("tab:red", "Teacher (A+V)"), "visual": ("tab:gray", "Visual-only"),
              "student": ("tab:blue", "Student (PKD, gate)"),
              "student_nogate": ("tab:green", "Student (PKD, no gate)")}  # fmt: skip
    for ax, target in zip(axes[:, 0], targets, strict=True):
        ax.plot(time_s, gold[target], color="black", lw=2.0, label="gold standard")
        for method, pred in curves.items():
            color, label = styles[method]
            ax.plot(time_s, pred[target], color=color, lw=1.0, alpha=0.85, label=label)
        ax.set_ylabel(target)
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", ncol=5, fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{video}: predictions vs gold standard (seed {seed}, raw)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def seed_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds' curves at the steps every seed has (`plateau.mean_curve`'s)."""
    steps = list(plateau.mean_curve(curves))
    if not steps:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    values = np.array([[c[s] for s in steps] for c in curves])  # [seeds, steps]
    return np.asarray(steps), values.mean(0), values.min(0), values.max(0)


def training_curves(
    workdir: Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    labels: dict[str, str] | None = None,
    scope: str = "mean_over_videos",
) -> None:
    """Training loss and the raw dev CCC of each target against the step, one line per method: the mean
    over `seeds` with a min-max band, read from every run's `metrics.jsonl` (runs/<method>/seed_<s>)."""
    labels = labels or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # {panel: {method: one curve per seed}}: the loss first, then the targets in the order logged.
    panels: dict[str, dict[str, list[Curve]]] = {"training loss": {}}
    for method in methods:
        for seed in seeds:
            run = workdir / "runs" / method / f"seed_{seed}"
            loss = {
                int(r["step"]): float(r["loss"])
                for r in read_metrics(run, "train")
                if r.get("loss") is not None
            }
            if loss:
                panels["training loss"].setdefault(method, []).append(loss)
            for target, curve in plateau.dev_curves(run, scope).items():
                panels.setdefault(f"dev CCC, {target}", {}).setdefault(method, []).append(curve)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, by_method) in zip(axes[0], panels.items(), strict=True):
        for method, curves in by_method.items():
            steps, mean, low, high = seed_band(curves)
            color = f"C{list(methods).index(method) % 10}"  # one colour per method in every panel
            marker = "o-" if title.startswith("dev") else "-"  # evaluations are sparse: mark each one
            label = f"{labels.get(method, method)} (n={len(curves)})"  # n: seeds with this curve
            ax.plot(steps, mean, marker, color=color, ms=3, lw=1.2, label=label)
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
        ax.set_title(title + (f" (raw, {scope.replace('_', ' ')})" if title.startswith("dev") else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"mean over seeds {list(seeds)} (line) and min-max over seeds (band)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
