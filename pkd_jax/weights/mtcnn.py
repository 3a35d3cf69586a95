"""MTCNN weights: facenet-pytorch's `pnet.pt`, `rnet.pt`, `onet.pt` -> one `.npz` for `pkd_jax.detect`.

Pretrained MTCNN weights ship inside the `facenet-pytorch` wheel on PyPI (`facenet_pytorch/data/*.pt`,
PyTorch state dicts converted from the original Caffe models). pkd_jax never downloads them: the user
fetches the wheel with pip and converts it once::

    pip download --no-deps facenet-pytorch==2.6.0 -d wheels/
    python -m pkd_jax.weights import --arch=mtcnn --src=wheels/facenet_pytorch-2.6.0-py3-none-any.whl \
        --out=weights/mtcnn.npz

`--src` may be the wheel itself, a folder holding the three `.pt` files (an unpacked wheel), or an `.npz`
written by this module. The `.pt` files are read by torch with `weights_only=True` (never running pickled
code); the `.npz` with numpy alone. The `mtcnn` package's weights are not supported: its files are
serialised Python objects that would have to be unpickled.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pkd_jax.weights.files import Tree, _read_npz, flatten_tree, load_torch_file, save_npz, unflatten_tree

MTCNN_NETWORKS = ("pnet", "rnet", "onet")
WHEEL_DATA = "facenet_pytorch/data"  # where the wheel keeps pnet.pt, rnet.pt and onet.pt
_PT_NAMES = {f"{n}.pt" for n in MTCNN_NETWORKS}


def mtcnn_from_torch(state_dicts: Mapping[str, Mapping[str, np.ndarray]]) -> Tree:
    """{"pnet"|"rnet"|"onet": PyTorch state dict} -> {"pnet": {"params": ...}, ...} in flax layout.

    Convolutions go from [out, in, kh, kw] to [kh, kw, in, out], linear layers from [out, in] to
    [in, out]; PReLU slopes keep their shape. Names are checked later (`check_mtcnn_tree`).
    """
    tree: Tree = {}
    for network in MTCNN_NETWORKS:
        params: Tree = {}
        for name, value in state_dicts[network].items():
            module, _, leaf = name.rpartition(".")
            value = np.asarray(value, np.float32)
            if module.startswith("prelu"):
                params.setdefault(module, {})["alpha"] = value
            elif leaf == "bias":
                params.setdefault(module, {})["bias"] = value
            elif value.ndim == 4:
                params.setdefault(module, {})["kernel"] = value.transpose(2, 3, 1, 0)
            elif value.ndim == 2:
                params.setdefault(module, {})["kernel"] = value.T
            else:
                raise ValueError(f"{network}: unexpected tensor {name} of shape {value.shape}")
        tree[network] = {"params": params}
    return tree


def check_mtcnn_tree(tree: Tree, source: str | os.PathLike) -> Tree:
    """Returns `tree` when it holds exactly MTCNN's tensors with their shapes; else a ValueError naming
    `source` and every missing, unexpected and mismatched tensor."""
    from pkd_jax.detect.mtcnn_nets import expected_variables

    expected = {k: tuple(v.shape) for k, v in flatten_tree(expected_variables()).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten_tree(tree).items()}
    problems = [f"missing {k} {s}" for k, s in expected.items() if k not in have]
    problems += [f"unexpected {k} {s}" for k, s in have.items() if k not in expected]
    problems += [
        f"{k} has shape {have[k]}, expected {s}" for k, s in expected.items() if k in have and have[k] != s
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{source} does not hold MTCNN's P-, R- and O-Net weights: {shown}")
    bad = [k for k, v in flatten_tree(tree).items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"{source}: non-finite values in {bad[:5]}")
    return tree


def _state_dicts_from_folder(folder: Path, source: Path) -> dict[str, dict[str, np.ndarray]]:
    found = {}
    for network in MTCNN_NETWORKS:
        candidates = sorted(folder.rglob(f"{network}.pt"))
        if not candidates:
            raise ValueError(
                f"{source}: no {network}.pt in it; expected facenet-pytorch's {WHEEL_DATA}/"
                "{pnet,rnet,onet}.pt (give the wheel, its unpacked folder, or an .npz from this command)"
            )
        found[network] = load_torch_file(candidates[0])
    return found


def load_mtcnn_source(src: str | os.PathLike) -> Tree:
    """MTCNN's variables from a facenet-pytorch wheel, a folder with its `.pt` files, or an `.npz`.

    Raises:
      FileNotFoundError: `src` does not exist.
      ValueError: naming `src`, when it is not one of those or lacks a network or tensor.
      ImportError: torch is missing for `.pt` files (an `.npz` needs only numpy).
    """
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"MTCNN weights source {path} does not exist")
    if path.is_dir():
        return check_mtcnn_tree(mtcnn_from_torch(_state_dicts_from_folder(path, path)), path)
    if path.suffix.lower() == ".npz":
        return load_mtcnn_weights(path)
    if path.suffix.lower() in (".whl", ".zip"):
        try:
            with zipfile.ZipFile(path) as wheel, tempfile.TemporaryDirectory() as tmp:
                members = [n for n in wheel.namelist() if n.rsplit("/", 1)[-1] in _PT_NAMES]
                for member in members:
                    target = Path(tmp) / Path(member).name
                    target.write_bytes(wheel.read(member))
                return check_mtcnn_tree(mtcnn_from_torch(_state_dicts_from_folder(Path(tmp), path)), path)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: not a readable wheel ({e})") from e
    raise ValueError(
        f"{path}: give the facenet-pytorch wheel (.whl), a folder with pnet.pt, rnet.pt and onet.pt, "
        "or an .npz written by `python -m pkd_jax.weights import --arch=mtcnn`"
    )


def load_mtcnn_weights(path: str | os.PathLike) -> Tree:
    """The `.npz` written by `import_mtcnn` (numpy only, never unpickling), checked name by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MTCNN weights file {path} does not exist; create it with `python -m pkd_jax.weights import "
            "--arch=mtcnn --src=<facenet-pytorch wheel> --out=<file>.npz` (docs/data.md, MTCNN)"
        )
    return check_mtcnn_tree(unflatten_tree(_read_npz(path)), path)


def import_mtcnn(src: str | os.PathLike, out: str | os.PathLike) -> Tree:
    """Converts `src` (see `load_mtcnn_source`) into the `.npz` `out`; nothing is written on error."""
    tree = load_mtcnn_source(src)
    save_npz(out, tree)
    return tree
