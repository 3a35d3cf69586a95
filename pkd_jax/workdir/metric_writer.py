"""Metric writers: `metrics.jsonl` (one JSON object per logging step) and TensorBoard event files.

Only process 0 writes; the others get a writer that does nothing. A resumed run first drops the records
logged after the step it resumes from (they were logged before a crash and will be logged again), so
`metrics.jsonl` holds each step once; `read_metrics` also keeps only the last record of a step, for
workdirs written before that.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax

from pkd_jax.cached import write_text_atomic


class MetricWriter:
    """Appends scalars to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/`."""

    def __init__(self, workdir: str | Path, *, enabled: bool | None = None, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        if self.enabled:
            from tensorboard.summary import Writer  # TF-free event writer

            self.path = Path(workdir) / "metrics.jsonl"
            if resume_step is not None:
                truncate_after(self.path, resume_step)
            self._tb = Writer(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None:
        """One record: `{"step", "kind", "time", **scalars}`; non-finite values are written as null."""
        if not self.enabled:
            return
        assert self._tb is not None  # enabled: __init__ opened it
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()}
        record = {"step": int(step), "kind": kind, "time": time.time(), **clean}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in clean.items():
            if value is not None:
                self._tb.add_scalar(f"{kind}/{name}", value, step=int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def truncate_after(path: Path, step: int) -> int:
    """Drops the records of `path` past `step` (rewritten whole, then renamed); returns how many."""
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def read_metrics(workdir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl` in step order, optionally of one kind ("train" or "eval").

    A step logged twice (by a run that crashed after logging it and was resumed from an earlier
    checkpoint) counts once: its last record.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            last[(record["kind"], record["step"])] = record
    records = sorted(last.values(), key=lambda r: r["step"])
    return [r for r in records if kind is None or r["kind"] == kind]
