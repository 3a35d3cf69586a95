"""Linear probes of a finished runner workdir's embeddings (`pkd_jax.experiments.embedding_probe`).

    python -m pkd_jax.experiments.probe --workdir=runs/demo_controls --seeds=5

Prints the tables and writes `<workdir>/probe.json` and `<workdir>/probe.md`. A missing or unfinished
workdir ends with one line and exit status 1 (`--verbose` shows the traceback).
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from pkd_jax import console

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished paper-runner workdir (results.json, runs/).")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Probe seeds 0 .. seeds-1.", lower_bound=1)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks and every library's log lines.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pkd_jax.experiments.embedding_probe import run_probes

    console.setup(verbose=_VERBOSE.value)
    workdir = Path(str(_WORKDIR.value))
    try:
        run_probes(workdir, _SEEDS.value)
    except (ValueError, OSError) as e:
        if _VERBOSE.value:
            raise
        raise SystemExit(f"error: {e}") from None
    print((workdir / "probe.md").read_text())


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
