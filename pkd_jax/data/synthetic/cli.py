"""The command line of the synthetic corpus generator: its flags and ``main``.

CLI::

  python -m pkd_jax.data.synthetic --out=DIR --train=9 --dev=9 --test=3 --seconds=60 --seed=0
  python -m pkd_jax.data.synthetic --out=DIR --layout=affwild2 ...   # Aff-Wild2 layout instead
  python -m pkd_jax.data.synthetic --out=DIR --nophysio ...         # without recordings_physio/ (ECG, EDA)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pkd_jax.data.synthetic.affwild2_layout import generate_affwild2_corpus
from pkd_jax.data.synthetic.config import SyntheticConfig
from pkd_jax.data.synthetic.recola_layout import generate_corpus


def define_flags() -> None:
    """Defines the CLI flags (called by `pkd_jax.data.synthetic.__main__`, never on import)."""
    from absl import flags

    flags.DEFINE_string("out", None, "Output corpus root.", required=True)
    flags.DEFINE_integer("train", 9, "Number of train_* recordings.")
    flags.DEFINE_integer("dev", 9, "Number of dev_* recordings.")
    flags.DEFINE_integer(
        "test", 0, "Number of test_* recordings (held-out, with ratings; RECOLA layout only)."
    )
    flags.DEFINE_float("seconds", 60.0, "Length of each recording in seconds.")
    flags.DEFINE_integer("seed", 0, "Corpus seed (non-negative).")
    flags.DEFINE_string("ratings_from", None, "RECOLA folder whose gold-standard ratings become the latent.")
    flags.DEFINE_integer("workers", 1, "Worker processes.")
    flags.DEFINE_integer("frame_size", 256, "Frame width and height in pixels (even).")
    flags.DEFINE_enum("layout", "recola", ["recola", "affwild2"], "Corpus layout to write.")
    flags.DEFINE_boolean(
        "physio",
        True,
        "Write recordings_physio/<id>.csv (ECG and EDA driven by arousal; RECOLA layout only).",
    )


def main(argv: Sequence[str]) -> None:
    """CLI entry point."""
    from absl import app, flags

    del argv
    f = flags.FLAGS
    if f.ratings_from:
        logging.info("--ratings_from given: ids and lengths come from the rating files")
    config = SyntheticConfig(frame_width=f.frame_size, frame_height=f.frame_size, physio=f.physio)
    if f.layout == "affwild2":
        if f.ratings_from or f.test:
            raise app.UsageError("--ratings_from and --test are for the RECOLA layout only")
        ids = generate_affwild2_corpus(f.out, f.train, f.dev, f.seconds, f.seed, config, workers=f.workers)
    else:
        ids = generate_corpus(
            f.out, f.train, f.dev, f.seconds, f.seed, f.ratings_from, config, workers=f.workers, n_test=f.test
        )
    print(f"wrote {len(ids)} recordings to {f.out}")
