"""Paired differences between methods over seeds, for `results.json` and the "Paired differences" section.

Runs of two methods with the same seed share their initialisation and their clip stream, so the per-seed
difference of their CCC cancels what the seed does to both (see `pkd_jax.experiments.stats`). Compared:
every student (a method named `student*`) against the visual-only baseline, which it differs from only by
distillation, and the teacher with frame retention against the teacher with black frames (Table 5).
Beyond the paper: the physio teachers against the audio-visual one, the two-teacher student against each
single-teacher student, and one-stage against two-stage distillation (both without a gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pkd_jax.experiments import stats

TARGET_ORDER = ("valence", "arousal")


def comparisons(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(method, reference) pairs among `methods`: student* - visual, then teacher - teacher_black."""
    pairs = [(m, "visual") for m in methods if m.startswith("student") and "visual" in methods]
    extensions = [
        ("teacher", "teacher_black"),
        ("teacher_pv", "teacher"),
        ("teacher_apv", "teacher"),
        ("student_two", "student"),
        ("student_two", "student_pv"),
        ("student_onestage", "student_nogate"),
    ]
    pairs += [(a, b) for a, b in extensions if a in methods and b in methods]
    return pairs


def paired_table(
    evals: Mapping[str, Mapping[int, Mapping[str, Any]]], scope: str = "mean_over_videos"
) -> dict[str, dict[str, Any]]:
    """Per comparison `"<method> - <reference>"`: the seeds both ran and, per target, `paired_difference`
    of their raw CCC (`scope` of `eval.json`'s "raw") over those seeds.

    Args:
      evals: {method: {seed: eval result}}, the results of one split.
      scope: "mean_over_videos" (RECOLA) or "concatenated" (Aff-Wild2).
    """
    table = {}
    for method, reference in comparisons(list(evals)):
        seeds = sorted(set(evals[method]) & set(evals[reference]))
        a = {s: evals[method][s]["raw"][scope] for s in seeds}
        b = {s: evals[reference][s]["raw"][scope] for s in seeds}
        names = {t for s in seeds for t in a[s] if all(t in a[k] and t in b[k] for k in seeds)}
        targets = sorted(names, key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else 99, t))
        table[f"{method} - {reference}"] = {
            "method": method,
            "reference": reference,
            "seeds": seeds,
            "targets": {
                t: stats.paired_difference([a[s][t] for s in seeds], [b[s][t] for s in seeds])
                for t in targets
            },
        }
    return table


def markdown_section(
    paired: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], seeds: Sequence[int]
) -> list[str]:
    """The "Paired differences" section of `results.md`: one table per split in `paired` ({split: table})."""
    lines = [
        "## Paired differences",
        "",
        "Per seed, a method's raw CCC minus its reference's with the same seed (same initialisation and "
        f"clip stream), then the mean over the {len(seeds)} seed(s) with a 95% Student-t interval (n - 1 "
        'degrees of freedom). "excludes 0": the seeds agree on the sign of the difference; "includes 0": '
        "it is within seed noise.",
    ]
    if len(seeds) < 2:
        lines += ["", "One seed: an anecdote, no interval."]
    for split, table in paired.items():
        targets = list(dict.fromkeys(t for row in table.values() for t in row["targets"]))
        lines += ["", f"### {split} split", ""]
        if not table:
            lines.append("No pair of compared methods ran here.")
            continue
        lines += [f"| difference | {' | '.join(targets)} |", "|" + "---|" * (len(targets) + 1)]
        for row in table.values():
            method, reference = (labels.get(row[k], row[k]) for k in ("method", "reference"))
            cells = [stats.describe(row["targets"][t]) if t in row["targets"] else "n/a" for t in targets]
            lines.append(f"| {method} − {reference} | {' | '.join(cells)} |")
    return [*lines, ""]
