"""Where a step's time goes: the operations of a `jax.profiler` trace, totalled and named.

`top_ops(trace_dir, hlo_text, steps)` reads the `.xplane.pb` that `jax.profiler` wrote, sums the time of
every XLA operation over the traced steps (on every device thread), and names each after its line in the
optimized HLO: the result shape and the source operation (`jvp(...)` for the forward pass,
`transpose(jvp(...))` for the backward pass, then the module path). Times are per step and, on CPU, summed
over the worker threads, so their total exceeds the step's wall time when threads run in parallel.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

# Trace events that wrap or wait on operations rather than being operations themselves.
_NOT_OPS = ("ThunkExecutor", "end:", "Await", "PjitFunction", "Execute", "$")
_HLO_LINE = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"")


def hlo_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (result shape, source op_name) from optimized HLO text."""
    names = {}
    for line in hlo_text.splitlines():
        match = _HLO_LINE.match(line)
        if match:
            names[match.group(1)] = (match.group(2), match.group(3))
    return names


def _device_lines(plane: Any) -> list[Any]:
    """Lines of a plane that carry XLA operations (device streams, or the CPU client's threads)."""
    if plane.name.startswith("/device:"):
        return [line for line in plane.lines if "Ops" in line.name or "Stream" in line.name]
    if plane.name == "/host:CPU":
        return [line for line in plane.lines if "XLAEigen" in line.name or "PjRtCpuClient" in line.name]
    return []


def top_ops(trace_dir: str | Path, hlo_text: str, steps: int, limit: int = 15) -> dict[str, Any]:
    """The `limit` most expensive operations per step in the newest trace under `trace_dir`."""
    from jax.profiler import ProfileData

    traces = sorted(Path(trace_dir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no .xplane.pb trace under {trace_dir}")
    totals: collections.Counter[str] = collections.Counter()
    for plane in ProfileData.from_file(str(traces[-1])).planes:
        for line in _device_lines(plane):
            for event in line.events:
                if not event.name.startswith(_NOT_OPS):
                    totals[event.name] += event.duration_ns
    names = hlo_names(hlo_text)
    total = sum(totals.values())
    ops = []
    for name, ns in totals.most_common(limit):
        shape, source = names.get(name, ("", ""))
        ops.append(
            {
                "op": name,
                "ms_per_step": ns / 1e6 / steps,
                "share": ns / total if total else 0.0,
                "shape": shape,
                "source": source.removeprefix("jit(train_step)/").removeprefix("jit(stream_step)/"),
            }
        )
    return {"op_ms_per_step": total / 1e6 / steps, "trace": str(traces[-1]), "top": ops}


def format_top_ops(summary: dict[str, Any]) -> str:
    """A table of `top_ops`'s result."""
    rows = [f"op time per step {summary['op_ms_per_step']:.1f} ms (summed over threads); top operations:"]
    for op in summary["top"]:
        rows.append(
            f"  {op['ms_per_step']:8.1f} ms {100 * op['share']:5.1f}%  {op['shape'][:30]:30} {op['source'][:90]}"
        )
    return "\n".join(rows)
