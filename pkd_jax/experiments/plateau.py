"""Has a method's dev CCC stopped rising by the end of training? One rule, the same for every method.

A comparison between methods at a fixed step count measures the methods only when every one of them has
converged; one still rising at the last step is compared partly on how fast the optimiser moves it. The
rule reads the dev evaluations every run logged (`metrics.jsonl`, kind "eval") and, per method, takes
the curve of the raw dev CCC averaged over the targets and then over the seeds:

- `best_step`: the evaluation step where that curve is highest (the earliest of equal ones);
- `final`: its value at the last evaluation, and `gap = final - best` (0 or below);
- `near_best`: `final >= best - tolerance` (tolerance 0.02 CCC by default); false when the curve fell
  back from an earlier peak;
- `still_rising`: the curve came within `tolerance` of its best only at the last evaluation (so the last
  is the best and every earlier one more than `tolerance` below it). A curve still climbing ends at its
  best, so `near_best` alone would call it converged;
- `plateaued`: `near_best` and not `still_rising`: it reached its level before the end and kept it;
- `first_step_within(tolerance)`: the earliest step whose value is within `tolerance` of the best. From a
  pilot run, the largest of these over the methods (`step_count`) is a step count at which every method
  has reached its plateau.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pkd_jax.workdir.metric_writer import read_metrics

TOLERANCE = 0.02  # CCC: a final value this close to the best counts as converged

Curve = dict[int, float]  # evaluation step -> dev CCC


def dev_curves(run: Path, scope: str = "mean_over_videos") -> dict[str, Curve]:
    """{target: {step: raw dev CCC}} of one run, from its `metrics.jsonl` "eval" records
    (`raw/<scope>/<target>`, scope as `eval.score`); a value logged as null (not finite) is left out."""
    prefix = f"raw/{scope}/"
    curves: dict[str, Curve] = {}
    for record in read_metrics(run, "eval"):
        for key, value in record.items():
            if key.startswith(prefix) and value is not None:
                curves.setdefault(key.removeprefix(prefix), {})[int(record["step"])] = float(value)
    return curves


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The mean of `curves` at the steps every one of them has, in step order.

    Only common steps: a seed evaluated at other steps (a run stopped and resumed elsewhere) would
    otherwise make a mean over different seeds at different steps.
    """
    if not curves:
        return {}
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return {s: float(np.mean([c[s] for c in curves])) for s in steps}


@dataclasses.dataclass(frozen=True)
class Convergence:
    """The rule on one method's curve (mean over targets, then over `seeds` seeds)."""

    curve: Curve  # evaluation step -> dev CCC, in step order; never empty
    seeds: int
    tolerance: float = TOLERANCE

    @property
    def best_step(self) -> int:
        return max(self.curve, key=self.curve.__getitem__)  # max keeps the first (earliest) of ties

    @property
    def best(self) -> float:
        return self.curve[self.best_step]

    @property
    def final_step(self) -> int:
        return max(self.curve)

    @property
    def final(self) -> float:
        return self.curve[self.final_step]

    @property
    def gap(self) -> float:
        """final - best: 0 when the last evaluation is the best, negative when the curve fell back."""
        return self.final - self.best

    @property
    def near_best(self) -> bool:
        return self.final >= self.best - self.tolerance

    @property
    def still_rising(self) -> bool:
        return self.first_step_within() == self.final_step

    @property
    def plateaued(self) -> bool:
        return self.near_best and not self.still_rising

    def first_step_within(self, tolerance: float | None = None) -> int:
        """The earliest evaluation step whose value is within `tolerance` (default: this one's) of the best."""
        tol = self.tolerance if tolerance is None else tolerance
        return min(s for s, v in self.curve.items() if v >= self.best - tol)

    def to_json(self) -> dict[str, Any]:
        """The record of `results.json`'s "convergence" section."""
        return {
            "seeds": self.seeds,
            "eval_steps": list(self.curve),
            "mean_dev_ccc": list(self.curve.values()),
            "best_step": self.best_step,
            "best": self.best,
            "final_step": self.final_step,
            "final": self.final,
            "final_minus_best": self.gap,
            "near_best": self.near_best,
            "still_rising": self.still_rising,
            "plateaued": self.plateaued,
            "first_step_within_tolerance": self.first_step_within(),
        }


def convergence(per_seed: Sequence[Mapping[str, Curve]], tolerance: float = TOLERANCE) -> Convergence | None:
    """The rule on a method's per-seed `{target: curve}` (`dev_curves`); None without a common step."""
    seeds = [mean_curve(list(targets.values())) for targets in per_seed if targets]
    curve = mean_curve(seeds)
    return Convergence(curve, len(seeds), tolerance) if curve else None


def step_count(results: Mapping[str, Convergence], tolerance: float | None = None) -> int | None:
    """The step count for every method: the largest `first_step_within(tolerance)` over them."""
    steps = [c.first_step_within(tolerance) for c in results.values()]
    return max(steps) if steps else None


def experiment_convergence(
    workdir: Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    scope: str = "mean_over_videos",
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """`results.json`'s "convergence": the rule per method over the runs `<workdir>/runs/<method>/seed_<s>`
    (methods without dev evaluations are left out), the methods not plateaued and `step_count`."""
    found = {}
    for method in methods:
        runs = [dev_curves(workdir / "runs" / method / f"seed_{s}", scope) for s in seeds]
        if (result := convergence(runs, tolerance)) is not None:
            found[method] = result
    return {
        "tolerance": tolerance,
        "score": scope,
        "methods": {m: c.to_json() for m, c in found.items()},
        "not_plateaued": [m for m, c in found.items() if not c.plateaued],
        "step_count": step_count(found),
    }
