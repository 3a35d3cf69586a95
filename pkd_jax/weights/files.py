"""Weight files: PyTorch checkpoints and `.npz` files -> numpy state dicts, and Flax trees <-> `.npz`.

`.pth`/`.pt`/`.t7`/`.tar`/`.bin` load through torch (imported only then) with `weights_only=True`, so a
file never runs pickled code; `.npz` files load with numpy alone (`allow_pickle=False`). On a machine
without torch, convert once elsewhere with `torch_to_npz("model.t7", "model.npz")`, or exchange whole
Flax trees with `save_npz` / `load_npz`.

Also the helpers the other modules share: the `Tree` / `StateDict` types, `flatten_tree` /
`unflatten_tree`, and the tensor -> numpy conversion of a state dict's values.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

Tree = dict[str, Any]
StateDict = Mapping[str, Any]  # values: numpy arrays or torch tensors

COLLECTIONS = ("params", "batch_stats")
TORCH_SUFFIXES = (".pth", ".pt", ".t7", ".tar", ".bin")
_WRAPPER_KEYS = ("net", "state_dict")  # FER2013 `{'net': ...}`, Lightning-style `{'state_dict': ...}`


def load_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict from a PyTorch checkpoint or an `.npz` file.

    `{'net': sd, ...}` (the FER2013 checkpoint) and `{'state_dict': sd, ...}` wrappers are unwrapped, and a
    `module.` prefix on every key (from `nn.DataParallel`) is removed. Floating tensors become float32.

    Args:
      path: a `.pth`, `.pt`, `.t7`, `.tar` or `.bin` file (read by torch with `weights_only=True`), or an
        `.npz` file of arrays keyed by PyTorch names (read by numpy; no torch needed).

    Returns:
      PyTorch parameter name -> numpy array.

    Raises:
      FileNotFoundError: The file does not exist.
      ValueError: An unknown format, an unreadable file, or not a state dict.
      ImportError: torch is missing for a torch file.

    Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"{path}: unknown weights format {suffix!r}; expected one of {[*TORCH_SUFFIXES, '.npz']}"
        )
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs PyTorch: `pip install torch`, or convert the file to .npz on a machine "
            "that has it with `pkd_jax.weights.torch_to_npz`"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (pickle, zip, runtime) for a bad file
        raise ValueError(f"could not read PyTorch weights from {path}: {e}") from e
    return _unwrap_state_dict(obj, path)


def torch_to_npz(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Converts a PyTorch checkpoint into an `.npz` of its state dict, readable later without torch."""
    _write_npz(dst, load_torch_file(src))


def save_npz(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
    """Saves a Flax variable tree as `.npz` with keys like `params/visual_cnn/features_0/kernel`.

    bfloat16 and other non-numpy floats are stored as float32, which `.npz` can hold without pickling.
    """
    flat = {}
    for name, leaf in flatten_tree(variables).items():
        arr = np.asarray(leaf)
        flat[name] = arr.astype(np.float32) if arr.dtype.kind == "V" else arr
    _write_npz(path, flat)


def load_npz(path: str | os.PathLike) -> Tree:
    """Loads a variable tree written by `save_npz` (numpy only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return unflatten_tree(_read_npz(path))


def flatten_tree(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Nested mapping -> `{"a/b/c": leaf}`; empty sub-mappings vanish."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            for sub, leaf in flatten_tree(value, sep).items():
                flat[f"{key}{sep}{sub}"] = leaf
        else:
            flat[str(key)] = value
    return flat


def unflatten_tree(flat: Mapping[str, Any], sep: str = "/") -> Tree:
    """Inverse of `flatten_tree`."""
    tree: Tree = {}
    for name, leaf in flat.items():
        *parents, last = name.split(sep)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def _write_npz(path: str | os.PathLike, flat: Mapping[str, np.ndarray]) -> None:
    # Through a file object, so numpy does not append ".npz" to a path that lacks it.
    with open(path, "wb") as f:
        # mypy matches **flat against savez's `allow_pickle: bool`; the names here are parameter paths.
        np.savez(f, **flat)  # type: ignore[arg-type]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"could not read .npz weights from {path}: {e}") from e


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, np.ndarray]:
    while isinstance(obj, Mapping):
        wrapped = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if not wrapped:
            break
        obj = obj[wrapped[0]]
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path} holds {what}, not a state dict of tensors")
    bad = [k for k, v in obj.items() if not _is_array(v)]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict")
    sd = {str(k): _to_numpy(v) for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "detach")


def _to_numpy(value: Any) -> np.ndarray:
    """Tensor or array -> numpy; floats become float32 (torch's bfloat16 has no numpy type)."""
    if hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    arr = np.asarray(value)
    return arr.astype(np.float32) if arr.dtype.kind in "fV" else arr


def _as_numpy(state_dict: StateDict) -> dict[str, np.ndarray]:
    return {str(k): _to_numpy(v) for k, v in state_dict.items()}
