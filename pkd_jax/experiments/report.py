"""Tables and figures of the paper runner: mean +- std over seeds, complexity, Figure 4, curves, gate,
convergence on dev."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pkd_jax.experiments import report_paired
from pkd_jax.experiments.report_labels import BEYOND, CONTROLS, LABELS, PAPER_RECOLA
from pkd_jax.losses import DISTILL_TERMS
from pkd_jax.provenance import provenance_lines
from pkd_jax.workdir.metric_writer import read_metrics


def distilled_shares(run: Path) -> dict[str, float]:
    """Every share of training sequences distilled that a student logged, averaged over the run:
    `distilled_fraction`, and for several teachers each gate's own, `distilled_fraction_<k>`."""
    records = read_metrics(run, "train")
    keys = {k for r in records for k in r if k.startswith("distilled_fraction")}
    return {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}


def distilled_fraction(run: Path) -> float | None:
    """Share of training sequences the gate let distil, averaged over the run (students only)."""
    return distilled_shares(run).get("distilled_fraction")


def summarize(
    evals: dict[str, dict[int, dict[str, Any]]],
    workdir: Path | None = None,
    scope: str = "mean_over_videos",
) -> dict[str, Any]:
    """Per method and target: mean and std (ddof 0) over seeds of the raw CCC of one split (`scope`:
    "mean_over_videos" as RECOLA reports it, or "concatenated" over all frames as Aff-Wild2 does), and,
    given `workdir`, for students the share of sequences distilled: per seed
    (`distilled_fraction_per_seed`) and its mean over seeds (`distilled_fraction`)."""
    summary: dict[str, dict[str, Any]] = {}
    for method, runs in evals.items():
        per_target: dict[str, list[float]] = {}
        for result in runs.values():
            for target, value in result["raw"][scope].items():
                per_target.setdefault(target, []).append(value)
        summary[method] = {
            t: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
            for t, v in per_target.items()
        }
        if workdir is not None and method.startswith("student"):
            logged = {str(s): distilled_shares(workdir / "runs" / method / f"seed_{s}") for s in runs}
            shares = {s: d["distilled_fraction"] for s, d in logged.items() if "distilled_fraction" in d}
            if shares:
                summary[method]["distilled_fraction"] = float(np.mean(list(shares.values())))
                summary[method]["distilled_fraction_per_seed"] = shares
            # Several teachers: each gate's own share, mean over the seeds that all logged it.
            common = set.intersection(*(set(d) for d in logged.values())) if logged else set()
            per_teacher = sorted((int(k.rsplit("_", 1)[1]), k) for k in common if k != "distilled_fraction")
            if per_teacher:
                summary[method]["distilled_fraction_by_teacher"] = [
                    float(np.mean([d[k] for d in logged.values()])) for _, k in per_teacher
                ]
    return summary


def _distill_table(results: dict[str, Any], which: str) -> list[str]:
    """The distillation terms side by side (`configs/demo.py:distill`); nothing when none was trained."""
    summary = results["summary"]  # the dev summary holds the training logs' distilled shares
    terms = [m for m in summary if m.startswith("student_") and m.removeprefix("student_") in DISTILL_TERMS]
    if not terms:
        return []
    return [
        f"## Distillation terms, all with the paper gate ({which})",
        "",
        *_table(results, ["visual", "student", *terms]),
        "",
        "Share of training sequences distilled: " + _distilled_shares(summary, ["student", *terms]),
        "",
    ]


def _beyond_table(results: dict[str, Any], which: str) -> list[str]:
    """Physio teachers, two teachers and one-stage training (`configs/demo.py:beyond`); nothing otherwise."""
    summary = results["summary"]
    if not any(m in summary for m in ("teacher_pv", "teacher_apv", "student_two", "student_onestage")):
        return []
    two = summary.get("student_two", {}).get("distilled_fraction_by_teacher")
    lines = [
        f"## Beyond the paper: physiological signals, two teachers, one-stage training ({which})",
        "",
        *_table(results, [m for m in BEYOND if m in summary]),
        "",
        "Share of training sequences distilled: "
        + _distilled_shares(summary, [m for m in BEYOND if m.startswith("student")]),
    ]
    if two:
        lines[-1] += (
            " (two teachers: distilled from at least one; each gate alone: "
            + ", ".join(f"teacher {k} {x:.2f}" for k, x in enumerate(two))
            + ")"
        )
    return [*lines, ""]


def _cell(stats: dict[str, Any] | None) -> str:
    return "n/a" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _targets(summary: dict[str, Any]) -> list[str]:
    names = ("valence", "arousal")
    return sorted({t for m in summary.values() for t in m if t in names}, key=names.index)


def _splits(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(split, summary) of the table columns: the test split first when there is one, then dev."""
    test = results.get("test")
    return [("test", test["summary"]), ("dev", results["summary"])] if test else [("dev", results["summary"])]


def _table(results: dict[str, Any], methods: list[str]) -> list[str]:
    """A Markdown table of `methods`: mean ± std per split and target, then the paper's RECOLA numbers."""
    splits = _splits(results)
    targets = _targets(results["summary"])
    lines = [
        f"| method | {' | '.join(f'{t} ({split})' for split, _ in splits for t in targets)} | "
        "paper, RECOLA dev (valence / arousal) |",
        "|" + "---|" * (len(splits) * len(targets) + 2),
    ]
    for m in methods:
        if m in results["summary"]:
            cells = " | ".join(_cell(summary.get(m, {}).get(t)) for _, summary in splits for t in targets)
            paper = " / ".join(f"{x:.3f}" for x in PAPER_RECOLA[m]) if m in PAPER_RECOLA else "n/a"
            lines.append(f"| {_label(m)} | {cells} | {paper} |")
    return lines


def _distilled_shares(summary: dict[str, Any], methods: Sequence[str]) -> str:
    """Every student's logged share, e.g. "Student (PKD, paper gate) 0.42 (per seed 0.40, 0.44)"."""
    parts = []
    for m in methods:
        stats = summary.get(m, {})
        if "distilled_fraction" in stats:
            per_seed = ", ".join(f"{x:.2f}" for x in stats.get("distilled_fraction_per_seed", {}).values())
            parts.append(f"{_label(m)} {stats['distilled_fraction']:.2f} (per seed {per_seed})")
    return ", ".join(parts) or "n/a"


def _gate_lines(results: dict[str, Any]) -> list[str]:
    """What the gate was set to and how much it let through, per gated student (from `gate.json`)."""
    gate = results.get("gate") or {}
    lines = []
    for method, runs in gate.items():
        first = next(iter(runs.values()))
        window = f", {first['window_frames']} frames" if first["context"] == "window" else ""
        quantile = [r["theta_quantile"] for r in runs.values()]
        theta = ", ".join(f"{r['theta']:.3f}" for r in runs.values())
        how = f"quantile {quantile[0]:g} of the teacher's gamma" if quantile[0] else "absolute"
        share = np.mean([r["expected_distilled_share"] for r in runs.values()])
        lines.append(
            f"- {_label(method)}: context {first['context']}{window}; theta per seed {theta} ({how}); "
            f"expected distilled share {share:.2f} (mean over {len(runs)} seed(s))"
        )
    if results.get("gate_png"):
        lines.append("- gate.png: the teacher's gamma over the training clip starts, theta marked, per seed.")
    else:
        lines.append("- gate.png: not written, no gate diagnostics found.")
    return lines


def _plateau_cell(c: dict[str, Any]) -> str:
    if c["plateaued"]:
        return "yes"
    return "no, still rising" if c.get("still_rising") else "no, fell back"


def _convergence_lines(results: dict[str, Any]) -> list[str]:
    """The "Convergence on dev" section from `results["convergence"]` (`plateau.experiment_convergence`):
    per method where its mean dev curve peaked and how far below that it ended; nothing without it."""
    conv = results.get("convergence")
    if not conv or not conv["methods"]:
        return []
    tol = conv["tolerance"]
    lines = [
        "## Convergence on dev",
        "",
        f"Raw dev CCC ({conv['score'].replace('_', ' ')}) at each evaluation of training, mean of the targets, "
        f"then mean over seeds (each run's metrics.jsonl). Plateaued: the final value is within {tol:g} of "
        "the best (else it fell back), and an earlier evaluation was too (else it is still rising).",
        "",
        "| method | eval steps | best step | best dev CCC | final dev CCC | final − best | plateaued |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, c in conv["methods"].items():
        steps = c["eval_steps"]
        lines.append(
            f"| {_label(method)} | {len(steps)} ({steps[0]} to {steps[-1]}) | {c['best_step']} | "
            f"{c['best']:.3f} | {c['final']:.3f} | {c['final_minus_best']:+.3f} | "
            f"{_plateau_cell(c)} |"
        )
    lines += [
        "",
        f"Step-count rule (to choose train.num_steps from a pilot run): the earliest evaluation within "
        f"{tol:g} of its method's best, at the latest over these methods: step {conv['step_count']}.",
    ]
    lines += [
        f"- {_label(m)} has not plateaued: comparisons with it measure the optimiser."
        for m in conv["not_plateaued"]
    ]
    return [*lines, ""]


def markdown_strong(results: dict[str, Any]) -> str:
    """`results.md` of the strong setting (Aff-Wild2, Table 6): raw dev CCC over all frames concatenated."""
    summary = results["summary"]
    targets = _targets(summary)
    seeds = results["seeds"]
    methods = [m for m in ("teacher", "visual", "student", "student_nogate") if m in summary]
    per_video = summarize(results["methods"], scope="mean_over_videos")  # secondary: within-video fit
    lines = [
        "# Results: strong setting (Aff-Wild2 layout)",
        "",
        f"Dev CCC (raw, over all dev frames concatenated, last training step), mean ± std over {len(seeds)} "
        f"seed(s) {seeds}. Corpus: {results['config']['data']['dataset']} at {results['config']['data']['root']}.",
        "",
        "## Table 6: R3D-18 + LSTM, ResNet-18 audio, joint cross-attention teacher; PKD student",
        "",
        f"| method | {' | '.join(f'{t} (all frames)' for t in targets)} | "
        f"{' | '.join(f'{t} (mean over videos)' for t in targets)} |",
        "|" + "---|" * (2 * len(targets) + 1),
        *[
            f"| {_label(m)} | {' | '.join(_cell(summary[m].get(t)) for t in targets)} | "
            f"{' | '.join(_cell(per_video[m].get(t)) for t in targets)} |"
            for m in methods
        ],
        "",
        f"Share of training sequences distilled: {_distilled_shares(summary, methods)}",
        "",
        *_convergence_lines(results),
        *report_paired.markdown_section(results.get("paired", {}), LABELS, seeds),
        "## Complexity",
        "",
        "| network | parameters (M) | GMACs per processed frame | GMACs per window |",
        "|---|---|---|---|",
        *[
            f"| {name} | {row['params_M']:.2f} | {row['GMACs_per_frame']:.3f} | {row['GMACs_per_window']:.3f} |"
            for name, row in results["complexity"].items()
        ],
        "",
        f"Runtime of this invocation: {results['runtime_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def console_summary(markdown_text: str) -> str:
    """The console's view of a `results.md`: its headline table (Table 1, or Table 6 in the strong setting)
    and the paired differences; the other tables stay in the file."""
    sections = markdown_text.split("\n## ")
    keep = [s.rstrip() for s in sections[1:] if s.startswith(("Table 1", "Table 6", "Paired differences"))]
    return "\n\n## ".join(["# Results (the headline; every table is in results.md)", *keep]) + "\n"


def _all_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    splits = [results["methods"], *([results["test"]["methods"]] if results.get("test") else [])]
    return [r for methods in splits for by_seed in methods.values() for r in by_seed.values()]


def markdown(results: dict[str, Any]) -> str:
    """`results.md`: one table per paper table, mean ± std over seeds of the raw CCC (mean over videos) on
    the test split with dev alongside, or on dev alone when there is no labelled test split; then the
    paired differences over seeds and the gate's diagnostics; a provenance footer when results have one."""
    strong = results["config"]["data"].get("window_subsequences")
    text = markdown_strong(results) if strong else _markdown_weak(results)
    if "provenance" in results:
        text += "\n" + "\n".join(provenance_lines(results["provenance"], _all_runs(results))) + "\n"
    return text


def _markdown_weak(results: dict[str, Any]) -> str:
    summary = results["summary"]
    seeds = results["seeds"]
    if results.get("test"):
        first = next(iter(next(iter(results["test"]["methods"].values())).values()))
        scores = (
            f"Scores on the held-out test split ({len(first['raw']['per_video'])} videos with ratings, used "
            "for no choice), dev alongside"
        )
        which = "test split, dev alongside"
    else:
        scores = (
            "Scores on the dev split (no labelled test split: RECOLA's test labels are not public; a synthetic "
            "corpus has one with experiment.corpus_test > 0)"
        )
        which = "dev split"
    students = [m for m in summary if m.startswith("student")]
    out = [
        "# Results",
        "",
        f"{scores}: raw CCC, mean over videos, final model at the last training step (no model selection); "
        f"mean ± std over {len(seeds)} seeds {seeds}. Corpus: {results['config']['data']['dataset']}. The "
        "paper's RECOLA numbers are for orientation only: other data, full-size networks and post-processed "
        "predictions.",
        "",
        f"## Table 1: teacher, visual-only baseline and PKD student ({which})",
        "",
        *_table(results, ["teacher", "visual", "student"]),
        "",
        "## Table 3: complexity (per frame)",
        "",
        "| network | parameters (M) | GMACs per frame |",
        "|---|---|---|",
        *[
            f"| {name} | {row['params_M']:.2f} | {row['GMACs_per_frame']:.3f} |"
            for name, row in results["complexity"].items()
        ],
        "",
        "Paper: teacher 39.7 M / 10.2 GMACs, student 27.8 M / 4.8 GMACs.",
        "",
        f"## Table 4: the negative-transfer gate ({which})",
        "",
        *_table(results, [m for m in ("student", "student_nogate") if m in summary]),
        "",
        "Share of training sequences distilled (the gate's decision, mean over steps, then over seeds): "
        + _distilled_shares(summary, students),
        "",
        *_gate_lines(results),
        "",
        *_distill_table(results, which),
        *_beyond_table(results, which),
        *_controls_table(results, which),
        f"## Table 5: missing faces, frame retention vs black frames (teacher; {which})",
        "",
        *_table(results, ["teacher", "teacher_black"]),
        "",
        *_convergence_lines(results),
        *report_paired.markdown_section(results.get("paired", {}), LABELS, seeds),
        f"Runtime of this invocation: {results['runtime_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(out)


def _controls_table(results: dict[str, Any], which: str) -> list[str]:
    """The controls (`configs/demo.py:controls`), when the experiment ran the shuffled teacher's student."""
    if "student_shuffled" not in results["summary"]:
        return []
    labelled = tuple(results.get("config", {}).get("data", {}).get("labelled_recordings") or ())
    regime = f"labels on {', '.join(labelled)} only; students distil on all" if labelled else "all labelled"
    return [
        f"## Controls ({which}; {regime})",
        "",
        *_table(results, [m for m in CONTROLS if m in results["summary"]]),
        "",
    ]


def _gate_files(run: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """(`gate.json`, gamma float32 [N] from `gate/gammas.npz`) of a student run, or None without both."""
    meta, gammas = run / "gate.json", run / "gate" / "gammas.npz"
    if not (meta.is_file() and gammas.is_file()):
        return None
    with np.load(gammas) as data:
        return json.loads(meta.read_text()), np.asarray(data["gamma"], np.float32)


def gate_diagnostics(
    workdir: Path, methods: Sequence[str], seeds: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """{method: {seed: gate.json + "clip_starts"}} of every run of `methods` (gated students) that wrote
    the gate's diagnostics; methods without any are left out."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        for seed in seeds:
            found = _gate_files(workdir / "runs" / method / f"seed_{seed}")
            if found is not None:
                meta, gamma = found
                out.setdefault(method, {})[str(seed)] = {**meta, "clip_starts": int(gamma.size)}
    return out


def gate_figure(workdir: Path, methods: Sequence[str], seeds: Sequence[int], out: Path) -> bool:
    """Histogram of the teacher's gamma over the training clip starts, one curve per seed and its theta as a
    vertical line, one panel per gated student; returns whether anything was drawn (no file otherwise)."""
    panels: dict[str, dict[int, tuple[dict[str, Any], np.ndarray]]] = {}
    for method in methods:
        files = {s: _gate_files(workdir / "runs" / method / f"seed_{s}") for s in seeds}
        if runs := {s: found for s, found in files.items() if found is not None}:
            panels[method] = runs
    if not panels:
        out.unlink(missing_ok=True)  # a stale figure from an earlier invocation would mislead
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.4 * len(panels)), squeeze=False)
    for ax, (method, runs) in zip(axes[:, 0], panels.items(), strict=True):
        values = np.concatenate([gamma for _, gamma in runs.values()])
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-6, 51)  # shared, so curves compare
        for k, (seed, (meta, gamma)) in enumerate(runs.items()):
            color = f"C{k % 10}"
            share = float(np.mean(gamma <= meta["theta"]))
            label = f"seed {seed}: theta {meta['theta']:.3f}, {100 * share:.0f}% of starts distilled"
            ax.hist(gamma, bins=bins, histtype="step", color=color, lw=1.2, label=label)
            ax.axvline(meta["theta"], color=color, ls="--", lw=1.0)
        meta = next(iter(runs.values()))[0]
        window = f", {meta['window_frames']} frames" if meta["context"] == "window" else ""
        ax.set_title(f"{_label(method)}: gate context {meta['context']}{window}")
        ax.set_xlabel("teacher's gamma = 1 - CCC(teacher, labels); distilled where gamma <= theta (dashed)")
        ax.set_ylabel("clip starts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
