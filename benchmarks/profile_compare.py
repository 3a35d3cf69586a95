"""The bench's profile summary (`pkd_jax.perf.profile_summary.top_ops`) against the XProf viewer's own
reading of the same `jax.profiler` trace.

    python benchmarks/profile_compare.py [--top=10] [--json]                       # writes a tiny trace first
    python benchmarks/profile_compare.py --trace_dir=DIR --hlo=FILE --steps=N     # an existing trace

Needs the viewer in the same environment (`pip install -e '.[profile]'`). Without `--trace_dir` it first
profiles the cached-student train step of the tiny config with the bench (`python -m pkd_jax.bench
--config=configs/recola_student.py:tiny --kinds=student_cached --steps=3 --warmup=1 --profile_dir=...
--dump_hlo=...`). The viewer converts a copy of the newest `.xplane.pb` (it writes cache files next to
the trace it reads), with `xprof.convert.raw_to_tool_data.xspace_to_tool_data`, into:

- its op tables, `hlo_stats` (self time per HLO op) and `framework_op_stats`: the viewer's side of the
  comparison where they have rows. On XLA:CPU they are empty (so are `op_profile` and `roofline_model`):
  XProf builds them from device planes, and a CPU trace has none;
- otherwise its trace viewer's events (the timeline it draws): an operation is an event with an `hlo_op`
  argument, its self time is its duration less the events nested in it on the same thread, as the trace
  viewer's selection summary reports them;
- its step-time breakdown (`overview_page`): the number of traced steps and each step's wall time.

It prints both top lists (per-step time and share of all op time), how many of the top names agree, the
largest per-op difference, both totals, and the names that only one side calls operations.
"""

from __future__ import annotations

import collections
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from absl import app, flags

from pkd_jax.perf import profile_summary

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string(
    "trace_dir", None, "A jax.profiler trace directory (the newest .xplane.pb under it is read)."
)
flags.DEFINE_string("hlo", None, "The traced step's optimized HLO text (names ops by shape and source).")
flags.DEFINE_integer("steps", None, "Traced steps (default: the number the viewer's step trace finds).")
flags.DEFINE_integer("top", 10, "How many of the costliest operations to compare.")
flags.DEFINE_string("work_dir", None, "Where to write the fresh trace (default: a temporary directory).")
flags.DEFINE_bool("json", False, "Print one JSON line instead of the tables.")


def write_trace(out: Path) -> dict[str, Any]:
    """Profile the tiny config's cached-student train step with the bench; its JSON result."""
    cmd = [
        sys.executable, "-m", "pkd_jax.bench", f"--config={REPO / 'configs' / 'recola_student.py'}:tiny",
        "--kinds=student_cached", "--steps=3", "--warmup=1", "--json",
        f"--profile_dir={out / 'trace'}", f"--dump_hlo={out / 'hlo'}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the bench failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (result,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return result


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """A gviz DataTable's rows as dicts keyed by column id."""
    ids = [col["id"] for col in table.get("cols", [])]
    return [
        dict(zip(ids, [c.get("v") if c else None for c in row["c"]], strict=False)) for row in table["rows"]
    ]


def _tool(xplane: Path, tool: str) -> Any:
    from xprof.convert import raw_to_tool_data

    data, _ = raw_to_tool_data.xspace_to_tool_data([str(xplane)], tool, {"use_saved_result": False})
    if data is None:
        raise RuntimeError(f"the viewer produced no {tool} for {xplane}")
    return json.loads(data)


def viewer_steps(xplane: Path) -> list[float]:
    """Wall time of each traced step (ms), from the viewer's step-time breakdown."""
    for table in _tool(xplane, "overview_page"):
        rows = _rows(table) if isinstance(table, dict) and "rows" in table else []
        if rows and "stepTimeMs" in rows[0]:
            return [float(r["stepTimeMs"]) for r in rows]
    return []


def viewer_op_table(xplane: Path) -> tuple[dict[str, float], int]:
    """HLO op -> total self time (ns) from the viewer's `hlo_stats`, and the rows of `framework_op_stats`."""
    ops: collections.Counter[str] = collections.Counter()
    for row in _rows(_tool(xplane, "hlo_stats")):
        ops[row["hlo_op_name"]] += float(row["total_self_time"]) * 1e3  # us -> ns
    framework = _tool(xplane, "framework_op_stats")
    framework_rows = sum(
        1 for table in framework for row in _rows(table) if row.get("operation") not in (None, "IDLE")
    )
    return dict(ops), framework_rows


def viewer_trace_ops(xplane: Path) -> dict[str, Any]:
    """Per-op occurrences, wall and self time (ns) among the trace viewer's events, with their threads."""
    events = _tool(xplane, "trace_viewer")["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[(e["pid"], e["tid"])].append(e)
    count: collections.Counter[str] = collections.Counter()
    wall: collections.Counter[str] = collections.Counter()
    self_ns: collections.Counter[str] = collections.Counter()
    op_threads: collections.Counter[str] = collections.Counter()
    for key, evs in by_thread.items():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list[Any]] = []  # [end, event, time of its children]
        done: list[tuple[dict[str, Any], float]] = []
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                _, parent, children = stack.pop()
                done.append((parent, children))
            if stack:
                stack[-1][2] += e["dur"]
            stack.append([e["ts"] + e["dur"], e, 0.0])
        done.extend((parent, children) for _, parent, children in stack)
        for e, children in done:
            if "hlo_op" in e.get("args", {}):
                name = e["args"]["hlo_op"]
                count[name] += 1
                wall[name] += e["dur"] * 1e3  # us -> ns
                self_ns[name] += (e["dur"] - children) * 1e3
                op_threads[threads.get(key, str(key))] += 1
    return {"count": dict(count), "wall": dict(wall), "self": dict(self_ns), "threads": dict(op_threads)}


def compare(trace_dir: Path, hlo_text: str, steps: int | None, top: int) -> dict[str, Any]:
    xplanes = sorted(trace_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not xplanes:
        raise SystemExit(f"no .xplane.pb under {trace_dir}")
    with tempfile.TemporaryDirectory() as tmp:  # the viewer writes its caches beside the trace it reads
        xplane = Path(tmp) / xplanes[-1].name
        shutil.copy(xplanes[-1], xplane)
        step_ms = viewer_steps(xplane)
        table, framework_rows = viewer_op_table(xplane)
        trace_ops = viewer_trace_ops(xplane)
    steps = steps or len(step_ms)
    if not steps:
        raise SystemExit("the viewer found no steps: pass --steps")
    ours = profile_summary.top_ops(trace_dir, hlo_text, steps, limit=1_000_000)
    source = "hlo_stats" if table else "trace_viewer"
    viewer_ns = table if table else trace_ops["self"]
    viewer_total = sum(viewer_ns.values())
    ours_by_op = {op["op"]: op for op in ours["top"]}
    ours_total_ms = ours["op_ms_per_step"]
    viewer_rank = sorted(viewer_ns, key=viewer_ns.get, reverse=True)

    def row(name: str) -> dict[str, Any]:
        mine = ours_by_op.get(name, {})
        theirs = viewer_ns.get(name, 0.0)
        return {
            "op": name,
            "source": mine.get("source", ""),
            "top_ops_ms": mine.get("ms_per_step", 0.0),
            "top_ops_share": mine.get("share", 0.0),
            "viewer_ms": theirs / 1e6 / steps,
            "viewer_share": theirs / viewer_total if viewer_total else 0.0,
            "viewer_wall_ms": trace_ops["wall"].get(name, 0.0) / 1e6 / steps,
            "occurrences_per_step": trace_ops["count"].get(name, 0) / steps,
        }

    ours_top = [op["op"] for op in ours["top"][:top]]
    rows = [row(name) for name in ours_top]
    diffs = [abs(r["viewer_ms"] - r["top_ops_ms"]) / r["top_ops_ms"] for r in rows if r["top_ops_ms"]]
    return {
        "trace": str(xplanes[-1]),
        "viewer_source": source,
        "viewer_hlo_stats_rows": len(table),
        "viewer_framework_op_stats_rows": framework_rows,
        "steps": steps,
        "viewer_step_ms": step_ms,
        "viewer_step_ms_median": statistics.median(step_ms) if step_ms else None,
        "top": rows,
        "viewer_top": [row(name) for name in viewer_rank[:top]],
        "same_top_names": len(set(ours_top) & set(viewer_rank[:top])),
        "same_order": ours_top == viewer_rank[:top],
        "max_rel_diff_top": max(diffs, default=0.0),
        "top_ops_total_ms": ours_total_ms,
        "viewer_self_total_ms": viewer_total / 1e6 / steps,
        "viewer_wall_total_ms": sum(trace_ops["wall"].values()) / 1e6 / steps,
        "total_rel_diff": abs(viewer_total / 1e6 / steps - ours_total_ms) / max(ours_total_ms, 1e-12),
        "top_ops_op_names": len(ours_by_op),
        "viewer_op_names": len(viewer_ns),
        "op_threads": trace_ops["threads"],
        # Names one side calls operations and the other does not (ms per step).
        "only_top_ops": {n: op["ms_per_step"] for n, op in ours_by_op.items() if n not in viewer_ns},
        "only_viewer": {n: ns / 1e6 / steps for n, ns in viewer_ns.items() if n not in ours_by_op},
    }


def format_comparison(c: dict[str, Any]) -> str:
    lines = [
        f"trace {c['trace']}",
        f"viewer: hlo_stats {c['viewer_hlo_stats_rows']} rows, framework_op_stats {c['viewer_framework_op_stats_rows']}"
        f" rows; compared against its {c['viewer_source']}",
        f"steps {c['steps']}; viewer step times (ms): " + ", ".join(f"{t:.2f}" for t in c["viewer_step_ms"]),
        f"op time per step: top_ops {c['top_ops_total_ms']:.3f} ms, viewer self {c['viewer_self_total_ms']:.3f} ms"
        f" (wall {c['viewer_wall_total_ms']:.3f} ms); difference {100 * c['total_rel_diff']:.3f}%",
        f"op names: top_ops {c['top_ops_op_names']}, viewer {c['viewer_op_names']}; ops per thread {c['op_threads']}",
        f"top {len(c['top'])}: {c['same_top_names']} names in common, same order {c['same_order']}, largest per-op"
        f" difference {100 * c['max_rel_diff_top']:.3f}%",
        f"operations only top_ops counts: {c['only_top_ops'] or 'none'}; only the viewer: {c['only_viewer'] or 'none'}",
        "",
        "   top_ops ms  share |  viewer ms  share   wall ms  n/step  op                           source",
    ]
    for r in c["top"]:
        lines.append(
            f"   {r['top_ops_ms']:10.3f} {100 * r['top_ops_share']:5.1f}% | {r['viewer_ms']:10.3f}"
            f" {100 * r['viewer_share']:5.1f}% {r['viewer_wall_ms']:9.3f} {r['occurrences_per_step']:7.1f}"
            f"  {r['op'][:28]:28} {r['source'][:70]}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    bench = None
    if FLAGS.trace_dir:
        trace_dir, hlo_text = Path(FLAGS.trace_dir), Path(FLAGS.hlo).read_text() if FLAGS.hlo else ""
        steps = FLAGS.steps
    else:
        out = Path(FLAGS.work_dir or tempfile.mkdtemp(prefix="profile_compare_"))
        bench = write_trace(out)
        trace_dir = out / "trace" / "train_student_cached"
        hlo_text = (out / "hlo" / "train_student_cached.hlo.txt").read_text()
        steps = 3
    result = compare(trace_dir, hlo_text, steps, FLAGS.top)
    if bench:
        result["bench_step_ms_median"] = 1e3 * bench["step_s_median"]
    if FLAGS.json:
        print(json.dumps(result))
    else:
        print(format_comparison(result))
        if bench:
            print(
                f"bench: median step {result['bench_step_ms_median']:.2f} ms over {steps} timed steps;"
                f" viewer median {result['viewer_step_ms_median']:.2f} ms"
            )


if __name__ == "__main__":
    app.run(main)
