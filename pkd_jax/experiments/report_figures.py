"""The paper runner's line figures: Figure 4 (predictions against the gold standard of one dev video) and
the training curves of one seed."""

from __future__ import annotations

import csv
from pathlib import Path

import ml_collections
import numpy as np

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


def training_curves(
    workdir: Path, methods: list[str], seed: int, out: Path, labels: dict[str, str] | None = None
) -> None:
    """Training loss and dev CCC over steps for each method (one seed), named by `labels`."""
    labels = labels or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, ccc_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for method in methods:
        run = workdir / "runs" / method / f"seed_{seed}"
        train = read_metrics(run, "train")
        evals = read_metrics(run, "eval")
        if train:
            loss_ax.plot(
                [r["step"] for r in train], [r["loss"] for r in train], label=labels.get(method, method)
            )
        if evals:
            ccc_ax.plot(
                [r["step"] for r in evals],
                [r["mean_ccc"] for r in evals],
                "o-",
                label=labels.get(method, method),
            )
    loss_ax.set_title("training loss")
    ccc_ax.set_title("dev CCC (mean of targets)")
    for ax in (loss_ax, ccc_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
