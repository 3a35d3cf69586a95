"""The `import` command: `python -m pkd_jax.weights import --arch=vgg19_bn|resnet18 --src=FILE --out=PATH`.

Converts a PyTorch checkpoint (or `.npz`) into a trunk initialisation file for `config.pretrained.*`
(see `pkd_jax.weights.trunks.import_trunk`).
"""

from __future__ import annotations

import numpy as np

from pkd_jax.weights.files import flatten_tree
from pkd_jax.weights.trunks import TRUNKS, import_trunk


def define_flags() -> None:
    """Defines the command's flags (called by `pkd_jax.weights.__main__`, never on import)."""
    from absl import flags

    flags.DEFINE_enum("arch", None, list(TRUNKS), "Trunk architecture of the source file.", required=True)
    flags.DEFINE_string("src", None, "PyTorch checkpoint (.pth/.t7/...) or .npz to convert.", required=True)
    flags.DEFINE_string("out", None, "Output .npz (Flax names), for config.pretrained.*.", required=True)
    flags.DEFINE_float("width", 1.0, "Channel multiplier of the target trunk (1.0: the paper's networks).")
    flags.DEFINE_integer("in_channels", None, "ResNet-18 input channels (default 1: log-mel; folds RGB).")


def main(argv: list[str]) -> None:
    """`python -m pkd_jax.weights import --arch=vgg19_bn|resnet18 --src=FILE --out=PATH`."""
    from absl import app, flags

    if argv[1:] != ["import"]:
        raise app.UsageError(f"expected the command `import`, got {argv[1:]}")
    f = flags.FLAGS
    try:
        tree = import_trunk(f.arch, f.src, f.out, width=f.width, in_channels=f.in_channels)
    except (ValueError, OSError, ImportError) as e:
        raise SystemExit(f"error: {e}") from e
    flat = flatten_tree(tree)
    count = sum(int(np.prod(np.shape(v))) for v in flat.values())
    fresh_fc = f.arch == "vgg19_bn" and "params/fc/kernel" not in flat
    note = " (no fc in the source: the model's fc keeps its random init)" if fresh_fc else ""
    print(f"{f.src} -> {f.out}: {f.arch}, {len(flat)} tensors, {count:,} values{note}")
    print(f"use it with --config.pretrained.{'visual_cnn' if f.arch == 'vgg19_bn' else 'audio_cnn'}={f.out}")
