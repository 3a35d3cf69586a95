"""Where a step's time goes: the operations of a `jax.profiler` trace, totalled and named.

`top_ops(trace_dir, hlo_text, steps)` reads the `.xplane.pb` that `jax.profiler` wrote, sums the self time
of every XLA operation over the traced steps (on every device thread), and names each after its line in
the optimized HLO: the result shape and the source operation (`jvp(...)` for the forward pass,
`transpose(jvp(...))` for the backward pass, then the module path). An operation's self time is its
duration less the events nested in it on the same thread (on CPU its completion callback `end: <op>` and
the thunk executor dispatching the next operations), as XProf's trace viewer and op tables count it. Times
are per step and, on CPU, summed over the worker threads, so their total exceeds the step's wall time when
threads run in parallel. `docs/profiling.md` compares these numbers with the XProf viewer's.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

# Threads of the CPU client that run XLA operations (jax 0.12 runs some on `tf_XLAExecute/...`).
_CPU_OP_THREADS = ("XLAEigen", "PjRtCpuClient", "XLAExecute")
# Trace events that wrap or wait on operations rather than being operations themselves.
_NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "end:", "Await", "PjitFunction", "Execute", "$")
# On the CPU client's threads, runtime scopes (`SlinkyThreadPool::Await`, `end: copy.3`) share the lines of the
# operations, whose HLO instruction names never hold a space, a colon or a bracket.
_HLO_NAME = re.compile(r"[\w.\-]+")
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
        return [line for line in plane.lines if any(thread in line.name for thread in _CPU_OP_THREADS)]
    return []


def _self_times(events: Any) -> list[tuple[str, float]]:
    """(name, self time in ns) of each event of one line: its duration less that of the events it encloses."""
    spans = sorted(((e.start_ns, e.duration_ns, e.name) for e in events), key=lambda s: (s[0], -s[1]))
    done: list[tuple[str, float]] = []
    stack: list[list[Any]] = []  # [end, name, duration, time of the events directly inside it]
    for start, duration, name in spans:
        while stack and stack[-1][0] <= start:
            _, done_name, done_duration, inner = stack.pop()
            done.append((done_name, done_duration - inner))
        if stack:
            stack[-1][3] += duration
        stack.append([start + duration, name, duration, 0.0])
    done.extend((name, duration - inner) for _, name, duration, inner in stack)
    return done


def top_ops(trace_dir: str | Path, hlo_text: str, steps: int, limit: int = 15) -> dict[str, Any]:
    """The `limit` operations of most self time per step in the newest trace under `trace_dir`."""
    from jax.profiler import ProfileData

    traces = sorted(Path(trace_dir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no .xplane.pb trace under {trace_dir}")
    totals: collections.defaultdict[str, float] = collections.defaultdict(float)
    for plane in ProfileData.from_file(str(traces[-1])).planes:
        cpu = plane.name == "/host:CPU"
        for line in _device_lines(plane):
            for name, ns in _self_times(line.events):
                if not name.startswith(_NOT_OPS) and (not cpu or _HLO_NAME.fullmatch(name)):
                    totals[name] += ns
    names = hlo_names(hlo_text)
    total = sum(totals.values())
    ops = []
    for name, ns in sorted(totals.items(), key=lambda item: item[1], reverse=True)[:limit]:
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
    """A table of `top_ops`'s result: self time and share per step, then the HLO instruction (the name its
    events have in the trace viewer), its result shape and its source operation."""
    rows = [
        f"op self time per step {summary['op_ms_per_step']:.2f} ms (summed over threads); top operations:"
    ]
    for op in summary["top"]:
        rows.append(
            f"  {op['ms_per_step']:8.3f} ms {100 * op['share']:5.1f}%  {op['op'][:26]:26} {op['shape'][:26]:26}"
            f" {op['source'][:90]}"
        )
    return "\n".join(rows)
