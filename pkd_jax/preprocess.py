"""Command line: preprocess a corpus into a feature cache.

    python -m pkd_jax.preprocess --dataset=recola|affwild2|synthetic --src=DIR --out=CACHE [--workers=N]

Every field of `pkd_jax.data.preprocess_config.PreprocessConfig` is also a flag (`--face_size`, `--detector`,
`--n_mels`, `--physio=auto|yes|no`, `--physio_sample_rate`, ...). Exits with status 1 when any video failed (2 when nothing could start: no corpus, a
cache of another configuration); rerunning resumes where it stopped.

Detectors are chosen by registered name (`--detector=haar`). For a detector of your own, `--detector_module`
names a plugin module (importable from here) that registers it with `pkd_jax.data.faces.register_detector`,
and `--detector=NAME` picks it; the module is imported here and in every worker process.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from pkd_jax.data.corpus_to_cache import DATASETS, preprocess_corpus
from pkd_jax.data.preprocess_config import PreprocessConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the CLI flags (only when run as a script, so importers' flags never clash)."""
    flags.DEFINE_enum("dataset", None, sorted(DATASETS), "Corpus format ('synthetic' = RECOLA layout).")
    flags.DEFINE_string("src", None, "Corpus root directory.")
    flags.DEFINE_string("out", None, "Cache directory (created, or resumed when it exists).")
    flags.DEFINE_integer("workers", 1, "Worker processes (one video each at a time).")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")
    flags.DEFINE_multi_string(
        "detector_module",
        [],
        "Plugin module registering a face detector of your own (pkd_jax.data.faces.register_detector); "
        "imported here and in every worker. Repeatable.",
    )
    define: dict[type, Callable[..., Any]] = {
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }
    for field in dataclasses.fields(PreprocessConfig):
        define[type(field.default)](field.name, field.default, field.metadata.get("help", ""))
    flags.mark_flags_as_required(["dataset", "src", "out"])


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        # Each field has a flag of its type with a non-None default (absl types `.value` as Optional).
        values: dict[str, Any] = {f.name: FLAGS[f.name].value for f in dataclasses.fields(PreprocessConfig)}
        config = PreprocessConfig(**values)
    except ValueError as e:  # a wrong setting: one line, not the usage text
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        manifest = preprocess_corpus(
            FLAGS.dataset,
            FLAGS.src,
            FLAGS.out,
            config,
            workers=FLAGS.workers,
            progress=FLAGS.progress,
            detector_modules=FLAGS.detector_module,
        )
    except (FileNotFoundError, ValueError) as e:  # Setup problems; per-video ones are in the summary.
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if any(m["status"] != "ok" for m in manifest["videos"].values()) else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
