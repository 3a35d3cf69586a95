"""Metric writers: `metrics.jsonl` (one JSON object per logging step) and TensorBoard event files.

Only process 0 writes; the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax


class MetricWriter:
    """Appends scalars to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/`."""

    def __init__(self, workdir: str | Path, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        if self.enabled:
            from tensorboard.summary import Writer  # TF-free event writer

            self.path = Path(workdir) / "metrics.jsonl"
            self._tb = Writer(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None:
        """One record: `{"step", "kind", "time", **scalars}`; non-finite values are written as null."""
        if not self.enabled:
            return
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


def read_metrics(workdir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl`, optionally only those of one kind ("train" or "eval")."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]
