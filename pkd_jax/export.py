"""Command line: export a trained student as serialized StableHLO (`jax.export`), for deployment.

    python -m pkd_jax.export --workdir=runs/student --out=student.jax_export [--platforms=cpu,cuda]

Writes the export and its metadata (`<out>.json`); see `pkd_jax.inference.export` for what the exported
function takes and returns, and how to run it with jax alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pkd_jax.inference import load_trained, preprocess_settings
from pkd_jax.inference.export import export_student, metadata, save


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training workdir; its best checkpoint is exported.")
    flags.DEFINE_string("checkpoint", None, "Or one checkpoint directory, <workdir>/checkpoints/<step>.")
    flags.DEFINE_string("out", None, "Output file (its metadata goes to <out>.json).", required=True)
    flags.DEFINE_list("platforms", None, "Lowering platforms, e.g. cpu,cuda (default: this machine's).")
    flags.DEFINE_string("cache", None, "The training feature cache (default: the one config.json names).")


def main(argv: Sequence[str]) -> None:
    """CLI entry point."""
    from absl import app, flags
    from absl import logging as absl_logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    f = flags.FLAGS
    try:
        trained = load_trained(f.workdir, f.checkpoint)
        settings, _ = preprocess_settings(trained.config, f.cache, need_detector=False)  # name only
        exported = export_student(trained, platforms=f.platforms)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    meta_path = save(f.out, exported, metadata(trained, exported, settings))
    size_mib = Path(f.out).stat().st_size / 2**20
    print(f"exported {trained.config.stage} step {trained.step} from {trained.source}")
    print(
        f"  {f.out} ({size_mib:.1f} MiB) for {', '.join(exported.platforms)}: {exported.in_avals} -> {exported.out_avals}"
    )
    print(f"  metadata: {meta_path}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
