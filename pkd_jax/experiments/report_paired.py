"""Paired differences between methods over seeds, for `results.json` and the "Paired differences" section.

Runs of two methods with the same seed share their initialisation and their clip stream, so the per-seed
difference of their CCC cancels what the seed does to both (see `pkd_jax.experiments.stats`). Compared:
every student (a method named `student*`) against the visual-only baseline, which it differs from only by
distillation, and the teacher with frame retention against the teacher with black frames (Table 5).
Beyond the paper: the physio teachers against the audio-visual one, the two-teacher student against each
single-teacher student, and one-stage against two-stage distillation (both without a gate).

Two intervals per difference: the headline, a two-way bootstrap over seeds and recordings of the
per-seed, per-recording differences (`pkd_jax.experiments.bootstrap`), which asks whether the difference
would hold on other recordings too; and the seeds-only t-interval of `stats.paired_difference`, which
holds the recordings fixed, kept for reference and for the code that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pkd_jax.experiments import bootstrap, stats

TARGET_ORDER = ("valence", "arousal")


def comparisons(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(method, reference) pairs among `methods`: student* - visual, teacher - visual, teacher - teacher_black, ..."""
    pairs = [(m, "visual") for m in methods if m.startswith("student") and "visual" in methods]
    extensions = [
        ("teacher", "visual"),  # what the privileged modality adds: the room a student has to gain
        ("teacher", "teacher_black"),
        ("teacher_pv", "teacher"),
        ("teacher_apv", "teacher"),
        ("student_two", "student"),
        ("student_two", "student_pv"),
        ("student_onestage", "student_nogate"),
        ("student_nogate", "student_shuffled"),
        ("student_mse_all_labels_teacher", "student_mse_all_labels_shuffled"),
    ]
    pairs += [(a, b) for a, b in extensions if a in methods and b in methods]
    return pairs


def paired_table(
    evals: Mapping[str, Mapping[int, Mapping[str, Any]]], scope: str = "mean_over_videos"
) -> dict[str, dict[str, Any]]:
    """Per comparison `"<method> - <reference>"`: the seeds both ran and, per target, `paired_difference`
    of their raw CCC (`scope` of `eval.json`'s "raw") over those seeds, with the two-way bootstrap of the
    per-recording differences under its key "bootstrap".

    Seeds are matched by seed and recordings by id. A recording that lacks a finite raw CCC for the target
    in either method on any shared seed (absent, or NaN) is dropped from both methods on every seed, so
    that the bootstrap's matrix stays seeds x recordings; the bootstrap entry lists the recordings used and
    those dropped. "bootstrap" is None when no recording is left or an eval has no "per_video".

    Args:
      evals: {method: {seed: eval result}}, the results of one split.
      scope: "mean_over_videos" (RECOLA) or "concatenated" (Aff-Wild2). The bootstrap always resamples
        per-recording CCC, so its mean is of the mean over recordings whatever the scope.
    """
    table = {}
    for method, reference in comparisons(list(evals)):
        seeds = sorted(set(evals[method]) & set(evals[reference]))
        a = {s: evals[method][s]["raw"][scope] for s in seeds}
        b = {s: evals[reference][s]["raw"][scope] for s in seeds}
        names = {t for s in seeds for t in a[s] if all(t in a[k] and t in b[k] for k in seeds)}
        targets = sorted(names, key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else 99, t))
        per_target = {}
        for t in targets:
            diff = stats.paired_difference([a[s][t] for s in seeds], [b[s][t] for s in seeds])
            diff["bootstrap"] = recording_bootstrap(
                [evals[method][s] for s in seeds], [evals[reference][s] for s in seeds], t
            )
            per_target[t] = diff
        table[f"{method} - {reference}"] = {
            "method": method,
            "reference": reference,
            "seeds": seeds,
            "scope": scope,
            "targets": per_target,
        }
    return table


def recording_bootstrap(
    method: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]], target: str
) -> dict[str, Any] | None:
    """`bootstrap.two_way_bootstrap` of method - reference raw per-recording CCC of `target`.

    Args:
      method, reference: Eval results, element i of both from the same seed.
      target: A target name of "per_video".

    Returns:
      The bootstrap result with "recordings" (the ids used, sorted) and "dropped_recordings" (ids without a
      finite score in either method on some seed) added, or None without seeds, without "per_video" in an
      eval, or with every recording dropped.
    """
    if not method or any("per_video" not in e["raw"] for e in (*method, *reference)):
        return None
    tables = [e["raw"]["per_video"] for e in (*method, *reference)]
    ids = sorted({r for table in tables for r in table})

    def score(table: Mapping[str, Mapping[str, float]], recording: str) -> float:
        value = table.get(recording, {}).get(target)
        return math.nan if value is None else float(value)

    kept = [r for r in ids if all(math.isfinite(score(table, r)) for table in tables)]
    if not kept:
        return None
    d = np.array(
        [
            [score(m["raw"]["per_video"], r) - score(ref["raw"]["per_video"], r) for r in kept]
            for m, ref in zip(method, reference, strict=True)
        ]
    )
    dropped = [r for r in ids if r not in kept]
    return {**bootstrap.two_way_bootstrap(d), "recordings": kept, "dropped_recordings": dropped}


def markdown_section(
    paired: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], seeds: Sequence[int]
) -> list[str]:
    """The "Paired differences" section of `results.md`: per split in `paired` ({split: table}), a table of
    the bootstrap intervals (the headline), then one of the seeds-only t-intervals."""
    scopes = {row.get("scope", "mean_over_videos") for table in paired.values() for row in table.values()}
    lines = [
        "## Paired differences",
        "",
        "Per seed and recording of the split, a method's raw CCC on the recording minus its reference's with "
        "the same seed (same initialisation and clip stream). Headline: the mean of these differences with a "
        f"95% paired two-way bootstrap interval: each of {bootstrap.N_BOOT} replicates resamples the seeds with "
        "replacement and, independently, the recordings with replacement, and takes the mean difference over "
        f"the resampled seeds x recordings (percentile interval, generator seed {bootstrap.SEED}). It counts "
        'seed and recording variation: "excludes 0" says the sign of the difference holds, at that confidence, '
        "when both the seeds and the recordings are redrawn. The smallest detectable effect is the "
        f"true mean difference this design (these seeds and recordings) would detect with {bootstrap.POWER:.0%} "
        "power at two-sided alpha 0.05, 2.80 x the bootstrap standard error, estimated from the observed "
        "spread. A recording without a finite score for either method on some seed is dropped from both "
        "methods (counted in the cell). With fewer than about 10 recordings or seeds a percentile interval "
        "runs narrow (simulated coverage 0.85 instead of 0.95 at 5 seeds x 3 recordings); where noise "
        "particular to one seed on one recording dominates, it runs wide: read it next to the seeds-only "
        "interval.",
        "",
        "Seeds only, for reference: per seed, the difference of the two methods' scores over the recordings, "
        f"then its mean over the {len(seeds)} seed(s) with a 95% Student-t interval (n - 1 degrees of "
        "freedom). It holds the recordings fixed, so it says whether the seeds agree on the sign on these "
        "recordings, not on others.",
    ]
    if "concatenated" in scopes:
        lines += [
            "",
            "This config scores CCC over all frames concatenated. The seeds-only interval is of that score; the "
            "bootstrap, which must resample recordings, is of the mean over recordings of per-recording CCC.",
        ]
    if len(seeds) < 2:
        lines += ["", "One seed: an anecdote, no interval."]
    for split, table in paired.items():
        targets = list(dict.fromkeys(t for row in table.values() for t in row["targets"]))
        lines += ["", f"### {split} split", ""]
        if not table:
            lines.append("No pair of compared methods ran here.")
            continue
        header = [f"| difference | {' | '.join(targets)} |", "|" + "---|" * (len(targets) + 1)]
        boot_rows, t_rows = [], []
        for row in table.values():
            method, reference = (labels.get(row[k], row[k]) for k in ("method", "reference"))
            diffs = [row["targets"].get(t) for t in targets]
            boot_cells = ["n/a" if d is None else _bootstrap_cell(d.get("bootstrap")) for d in diffs]
            t_cells = ["n/a" if d is None else stats.describe(d) for d in diffs]
            boot_rows.append(f"| {method} − {reference} | {' | '.join(boot_cells)} |")
            t_rows.append(f"| {method} − {reference} | {' | '.join(t_cells)} |")
        lines += [
            *header,
            *boot_rows,
            "",
            "Seeds only (t-interval, recordings held fixed):",
            "",
            *header,
            *t_rows,
        ]
    return [*lines, ""]


def _bootstrap_cell(boot: Mapping[str, Any] | None) -> str:
    """`bootstrap.describe`, and how many recordings were dropped for lack of a score when any were."""
    text = bootstrap.describe(None if boot is None else dict(boot))
    if boot and (dropped := len(boot.get("dropped_recordings", []))):
        text += f"; {dropped} recording(s) dropped (no finite score)"
    return text
