"""The `import` command: `python -m pkd_jax.weights import --arch=vgg19_bn|resnet18|mtcnn --src=FILE --out=PATH`.

Converts a PyTorch checkpoint (or `.npz`) into a trunk initialisation file for `config.pretrained.*`
(see `pkd_jax.weights.trunks.import_trunk`), or facenet-pytorch's MTCNN weights (its wheel, unpacked or
not) into the face detector's `.npz` (`pkd_jax.weights.mtcnn.import_mtcnn`).
"""

from __future__ import annotations

import numpy as np

from pkd_jax.weights.files import flatten_tree
from pkd_jax.weights.mtcnn import import_mtcnn
from pkd_jax.weights.trunks import TRUNKS, import_trunk


def define_flags() -> None:
    """Defines the command's flags (called by `pkd_jax.weights.__main__`, never on import)."""
    from absl import flags

    flags.DEFINE_enum(
        "arch", None, [*TRUNKS, "mtcnn"], "Trunk architecture of the source file, or mtcnn.", required=True
    )
    flags.DEFINE_string(
        "src",
        None,
        "PyTorch checkpoint (.pth/.t7/...) or .npz to convert; for mtcnn the facenet-pytorch wheel.",
        required=True,
    )
    flags.DEFINE_string("out", None, "Output .npz (Flax names), for config.pretrained.*.", required=True)
    flags.DEFINE_float("width", 1.0, "Channel multiplier of the target trunk (1.0: the paper's networks).")
    flags.DEFINE_integer("in_channels", None, "ResNet-18 input channels (default 1: log-mel; folds RGB).")


def main(argv: list[str]) -> None:
    """`python -m pkd_jax.weights import --arch=vgg19_bn|resnet18 --src=FILE --out=PATH`."""
    from absl import app, flags

    if argv[1:] != ["import"]:
        raise app.UsageError(f"expected the command `import`, got {argv[1:]}")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # JAX logs its backend search at INFO
    f = flags.FLAGS
    try:
        if f.arch == "mtcnn":
            tree = import_mtcnn(f.src, f.out)
        else:
            tree = import_trunk(f.arch, f.src, f.out, width=f.width, in_channels=f.in_channels)
    except (ValueError, OSError, ImportError) as e:
        raise SystemExit(f"error: {e}") from e
    flat = flatten_tree(tree)
    count = sum(int(np.prod(np.shape(v))) for v in flat.values())
    fresh_fc = f.arch == "vgg19_bn" and "params/fc/kernel" not in flat
    note = " (no fc in the source: the model's fc keeps its random init)" if fresh_fc else ""
    print(f"{f.src} -> {f.out}: {f.arch}, {len(flat)} tensors, {count:,} values{note}")
    if f.arch == "mtcnn":
        print(f"use it with --detector=mtcnn --detector_weights={f.out} (data.detector_weights in a config)")
        return
    print(f"use it with --config.pretrained.{'visual_cnn' if f.arch == 'vgg19_bn' else 'audio_cnn'}={f.out}")
