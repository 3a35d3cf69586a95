"""Linear probes of a finished runner workdir: what distillation changed in a student's embedding.

    python -m pkd_jax.experiments.probe --workdir=runs/demo_controls --seeds=5

For each seed, every method's last checkpoint is run over the train and dev recordings (on the frozen
trunks' cached features, as in training). Per method:
- `own`: dev CCC of its predictions (raw, mean over videos);
- `probe_labelled` / `probe_all`: dev CCC of a ridge readout of its embedding fit on the labelled training
  recordings (`data.labelled_recordings` of the base config) or on every training recording.
Per (network, teacher) pair, a student or the baseline next to a teacher of the same seed:
- `teacher_r2`: dev R^2 of the teacher's embedding from a ridge map (fit on train) of the network's: how
  much of the teacher's embedding the network's embedding holds, in any coordinates;
- `cosine`: mean cosine of the two embeddings on dev frames (what the cosine term pushes up);
- `cosine_teacher_mean`: mean cosine of the teacher's dev embeddings with their mean over training
  frames: what a constant embedding would reach.
Ridge readouts minimise squared error, not CCC: compare probes with probes, not with `own`.
Writes `<workdir>/probe.json` and `<workdir>/probe.md` (mean and std over seeds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from pkd_jax import metrics
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.data.physio_windows import PhysioWindows
from pkd_jax.experiments.stats import describe, paired_difference
from pkd_jax.workdir.trained import load_trained

Embeddings = dict[str, tuple[np.ndarray, np.ndarray]]  # {video: (pred [T, K], emb [T, D])}
# The pairs probed when present: each student with its teacher, and the baseline with the same teacher.
PAIRS = (
    ("visual", "teacher"),
    ("student", "teacher"),
    ("student_nogate", "teacher"),
    ("visual", "teacher_all_labels"),
    ("student_all_labels_teacher", "teacher_all_labels"),
    ("student_mse_all_labels_teacher", "teacher_all_labels"),
    ("visual", "teacher_pv"),
    ("student_pv", "teacher_pv"),
    ("student_two", "teacher"),
    ("student_two", "teacher_pv"),
)


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    """Ridge regression weights [D + 1, K] (bias last) of y [N, K] on x [N, D]; `lam` per sample."""
    x1 = np.c_[x, np.ones(len(x))]
    return np.linalg.solve(x1.T @ x1 + lam * len(x) * np.eye(x1.shape[1]), x1.T @ y)


def apply_ridge(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The ridge map `w` on x [N, D]."""
    return np.c_[x, np.ones(len(x))] @ w


def r_squared(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - residual / total sum of squares, over every column of target [N, D]."""
    return float(1 - ((pred - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine of a [N, D] and b [N, D] (b may be one row [D])."""
    b = np.broadcast_to(b, a.shape)
    return float(np.mean(np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def embeddings(run_dir: Path, cache: Cache, video_ids: Sequence[str]) -> Embeddings:
    """Predictions and embedding of a finished run's best (last) checkpoint on every video, each in one pass."""
    from pkd_jax.precompute.trunk_features import frozen_feature_arrays

    trained = load_trained(workdir=run_dir)
    if trained.config.get("model", {}).get("frozen_features") != "cached":
        raise ValueError(f"{run_dir}: probes read frozen trunks' cached features; this run trains its trunks")
    arrays, _ = frozen_feature_arrays(
        trained.config, trained.model, trained.variables, cache, splits=("train", "dev")
    )
    teacher = trained.config.stage == "teacher"
    physio = None
    if teacher and "physio" in trained.model.modality_order:  # windows around every frame, as in evaluation
        physio = PhysioWindows(cache, build.physio_pipeline(trained.config).physio_offsets)

    def run(variables: Any, windows: Any, features: dict[str, Any]) -> Any:
        inputs = (None, None, windows) if teacher else (None,)  # frames (and audio) come as features
        return trained.model.apply(variables, *inputs, train=False, **features)

    forward = jax.jit(run)
    out = {}
    for vid in video_ids:
        features = {k: np.asarray(a[vid])[None] for k, a in arrays.items()}
        frames = len(next(iter(features.values()))[0])
        windows = None if physio is None else physio(cache.video(vid), np.arange(frames))[None]
        pred, emb = forward(trained.variables, windows, features)
        out[vid] = (np.asarray(pred[0]), np.asarray(emb[0]))
    return out


def _dev_ccc(cache: Cache, columns: Sequence[int], pred_of: Any) -> list[float]:
    scores = []
    for vid in cache.ids("dev"):
        video = cache.video(vid)
        labels, mask = np.asarray(video.labels)[:, list(columns)], np.asarray(video.label_mask) > 0
        pred = pred_of(vid)
        scores.append([metrics.ccc_np(pred[:, k], labels[:, k], mask) for k in range(len(columns))])
    return np.mean(scores, 0).tolist()


def probe_seed(workdir: Path, seed: int, labelled: Sequence[str], columns: Sequence[int]) -> dict[str, Any]:
    """Every probe of one seed (see the module docstring); `columns` are the targets' label columns."""
    cache = Cache(workdir / "cache")
    train, dev = cache.ids("train"), cache.ids("dev")
    present = sorted({m for pair in PAIRS for m in pair if (workdir / "runs" / m / f"seed_{seed}").is_dir()})
    emb = {m: embeddings(workdir / "runs" / m / f"seed_{seed}", cache, train + dev) for m in present}
    gold = {v: np.asarray(cache.video(v).labels)[:, list(columns)] for v in train}
    fit_ids = {"probe_labelled": list(labelled) or train, "probe_all": train}
    # Each network's embedding stacked over the frames of every split a probe fits or scores on.
    stacked = {
        m: {
            split: np.concatenate([emb[m][v][1] for v in ids])
            for split, ids in (("train", train), ("dev", dev))
        }
        for m in present
    }
    out: dict[str, Any] = {"methods": {}, "pairs": {}}
    for m in present:
        row = {"own": _dev_ccc(cache, columns, lambda v, m=m: emb[m][v][0])}
        for name, ids in fit_ids.items():
            x = stacked[m]["train"] if ids == train else np.concatenate([emb[m][v][1] for v in ids])
            w = ridge(x, np.concatenate([gold[v] for v in ids]))
            row[name] = _dev_ccc(cache, columns, lambda v, m=m, w=w: apply_ridge(w, emb[m][v][1]))
        out["methods"][m] = row
    for net, teacher in PAIRS:
        if net in emb and teacher in emb:
            a, b = stacked[net], stacked[teacher]
            out["pairs"][f"{net} -> {teacher}"] = {
                "teacher_r2": r_squared(apply_ridge(ridge(a["train"], b["train"]), a["dev"]), b["dev"]),
                "cosine": mean_cosine(a["dev"], b["dev"]),
                "cosine_teacher_mean": mean_cosine(b["dev"], b["train"].mean(0)),
            }
    return out


def summarize(per_seed: list[dict[str, Any]], targets: Sequence[str]) -> str:
    """Markdown tables of mean ± std over seeds."""

    def rows(section: str, keys: Sequence[str], index: Sequence[int | None]) -> list[str]:
        """A row per method (or pair) of `section`: mean ± std over seeds of each key (and target index)."""
        out = []
        for name in per_seed[0][section]:
            values = [s[section][name] for s in per_seed]
            cols = [[v[k] if i is None else v[k][i] for v in values] for k in keys for i in index]
            out.append(
                f"| {name} | " + " | ".join(f"{np.mean(c):.3f} ± {np.std(c):.3f}" for c in cols) + " |"
            )
        return out

    probes = ("own", "probe (labelled)", "probe (all)")
    lines = [
        "| method | " + " | ".join(f"{c} {t}" for c in probes for t in targets) + " |",
        "|---" * (1 + len(probes) * len(targets)) + "|",
        *rows("methods", ("own", "probe_labelled", "probe_all"), range(len(targets))),
        "",
        "| network -> teacher | teacher R^2 | cosine | teacher's cosine to its mean |",
        "|---|---|---|---|",
        *rows("pairs", ("teacher_r2", "cosine", "cosine_teacher_mean"), (None,)),
        "",
        "Teacher R^2, each student minus the baseline of the same seed and teacher (paired t-interval):",
        "",
    ]
    for pair in per_seed[0]["pairs"]:
        net, teacher = pair.split(" -> ")
        baseline = f"visual -> {teacher}"
        if net != "visual" and baseline in per_seed[0]["pairs"]:
            r2 = {p: [s["pairs"][p]["teacher_r2"] for s in per_seed] for p in (pair, baseline)}
            diff = paired_difference(r2[pair], r2[baseline])
            lines.append(f"- {net} - visual (teacher {teacher}): {describe(diff)}")
    return "\n".join(lines) + "\n"


def run_probes(workdir: str | Path, seeds: int) -> dict[str, Any]:
    """Probes of seeds 0..seeds-1 of a finished runner workdir; writes probe.json and probe.md there."""
    workdir = Path(workdir)
    results_path = workdir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} does not exist: run the paper runner in {workdir} first")
    config = json.loads(results_path.read_text())["config"]
    labelled = tuple(config["data"].get("labelled_recordings", ()))
    recorded = ml_collections.ConfigDict(config)
    targets, columns = build.target_names(recorded), build.target_indices(recorded)
    per_seed = [probe_seed(workdir, s, labelled, columns) for s in range(seeds)]
    out = {"seeds": list(range(seeds)), "labelled_recordings": list(labelled), "per_seed": per_seed}
    (workdir / "probe.json").write_text(json.dumps(out, indent=1))
    (workdir / "probe.md").write_text(summarize(per_seed, targets))
    return out
