"""Trunk initialisation files: the files `config.pretrained.*` (the trunks' init_from) accepts.

`load_trunk` reads a trunk's variables from a converted `.npz`, a PyTorch checkpoint or an `.npz` state
dict; `import_trunk` checks a source file against the trunk's expected shapes (`expected_trunk`) and
writes the converted `.npz` (the `python -m pkd_jax.weights import` command).
"""

from __future__ import annotations

import os
from pathlib import Path

from pkd_jax.weights.convert import adapt_conv1_channels, resnet18_from_torch, vgg19_bn_from_torch
from pkd_jax.weights.files import (
    COLLECTIONS,
    Tree,
    _as_numpy,
    _read_npz,
    load_torch_file,
    save_npz,
    unflatten_tree,
)
from pkd_jax.weights.merge import merge_into

TRUNKS = ("vgg19_bn", "resnet18")  # --arch values: the visual (VGG19-BN) and audio (ResNet-18) trunks


def load_trunk(path: str | os.PathLike, arch: str, *, in_channels: int | None = None) -> Tree:
    """The variables of one trunk from any file `config.pretrained.*` (the trunks' init_from) accepts.

    Accepted: a file converted by `python -m pkd_jax.weights import` (`.npz` keyed `params/...`), a
    PyTorch checkpoint (`.pth`, `.t7`, ...: FER2013's `{'net': ...}`, torchvision's state dicts), or an
    `.npz` of a state dict under PyTorch names. Names and shapes are checked when the result is merged
    into a model (`merge_into`).

    Args:
      path: The file.
      arch: "vgg19_bn" or "resnet18".
      in_channels: ResNet-18 only: input channels of the target (1 folds an ImageNet conv1, see
        `adapt_conv1_channels`); None keeps the file's.
    """
    if arch not in TRUNKS:
        raise ValueError(f"unknown trunk {arch!r}; choose one of {list(TRUNKS)}")
    path = Path(path)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        flat = _read_npz(path)
        if flat and all(name.split("/")[0] in COLLECTIONS for name in flat):  # already converted
            tree = unflatten_tree(flat)
            return adapt_conv1_channels(tree, in_channels) if arch == "resnet18" else tree
        state_dict = _as_numpy(flat)
    else:
        state_dict = load_torch_file(path)
    try:
        if arch == "vgg19_bn":
            return vgg19_bn_from_torch(state_dict)
        return resnet18_from_torch(state_dict, in_channels=in_channels)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def expected_trunk(arch: str, *, width: float = 1.0, in_channels: int = 1) -> Tree:
    """Shapes (`jax.ShapeDtypeStruct` leaves) of a trunk's variables at the paper's input sizes.

    VGG19-BN: 112 x 112 RGB faces and the 4608 -> 512 fc of the released code. ResNet-18:
    `in_channels`-channel spectrograms (the size does not matter: the trunk is globally pooled).
    """
    import jax
    import jax.numpy as jnp

    from pkd_jax.models import VGG19BN, ResNet18

    model: VGG19BN | ResNet18
    if arch == "vgg19_bn":
        model, x = VGG19BN(width=width, embed_dim=512), jnp.zeros((1, 112, 112, 3))
    elif arch == "resnet18":
        model, x = ResNet18(width=width), jnp.zeros((1, 64, 100, in_channels))
    else:
        raise ValueError(f"unknown trunk {arch!r}; choose one of {list(TRUNKS)}")
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def import_trunk(
    arch: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    width: float = 1.0,
    in_channels: int | None = None,
) -> Tree:
    """Converts `src` into a trunk initialisation file `out` (`.npz` of Flax names) and returns the tree.

    Every tensor the trunk expects must be in `src` with the expected shape (VGG19-BN's fc may be
    absent, as in the FER2013 checkpoint: it then keeps its random init); otherwise nothing is written
    and the ValueError lists every missing, unexpected and mismatched tensor.

    Args:
      arch: "vgg19_bn" or "resnet18".
      src: A PyTorch checkpoint or `.npz` (see `load_trunk`).
      out: The output file.
      width: The trunk's channel multiplier (1.0: the paper's networks).
      in_channels: ResNet-18 input channels; None: 1 (log-mel spectrograms), folding an RGB conv1.
    """
    channels = 1 if in_channels is None else in_channels
    tree = load_trunk(src, arch, in_channels=channels if arch == "resnet18" else None)
    expected = expected_trunk(arch, width=width, in_channels=channels)
    allow = ("fc",) if arch == "vgg19_bn" and "fc" not in tree.get("params", {}) else ()
    try:
        merge_into(expected, tree, allow_missing=allow)
    except ValueError as e:
        raise ValueError(f"{src} is not a {arch} (width {width:g}) checkpoint: {e}") from e
    save_npz(out, tree)
    return tree
