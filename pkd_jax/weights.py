"""Pretrained weights: PyTorch state dicts and `.npz` files -> Flax variable trees.

Converters return `{"params": ..., "batch_stats": ...}` trees of numpy float32 arrays for one module (or a
whole model); `merge_into` places them into a model's variables and checks every name and shape, so a
weight is never dropped or left at its random init without being asked for.

Layout rules (PyTorch -> Flax): conv weight [O, I, kh, kw] -> kernel [kh, kw, I, O]; linear weight
[out, in] -> kernel [in, out]; BatchNorm weight, bias -> params scale, bias and running_mean, running_var ->
batch_stats mean, var (`num_batches_tracked` is dropped); `features.3` -> `features_3`,
`layer2.0.downsample.1` -> `layer2_0/downsample_1`. Recurrent layers keep PyTorch's gate order, so their
matrices are only transposed.

Files: `.pth`/`.pt`/`.t7`/`.tar`/`.bin` load through torch (imported only then) with `weights_only=True`;
`.npz` files load with numpy alone. On a machine without torch, convert once elsewhere with
`torch_to_npz("model.t7", "model.npz")`, or exchange whole Flax trees with `save_npz` / `load_npz`.

Typical use::

    variables = model.init(key, frames)  # or jax.eval_shape(model.init, key, frames)
    sd = load_torch_file("PrivateTest_model.t7")  # FER2013 VGG19: no 4608->512 fc in it
    variables = merge_into(variables, vgg19_bn_from_torch(sd), path="visual_cnn", allow_missing=["fc"])
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

Tree = dict[str, Any]
StateDict = Mapping[str, Any]  # values: numpy arrays or torch tensors

COLLECTIONS = ("params", "batch_stats")
TORCH_SUFFIXES = (".pth", ".pt", ".t7", ".tar", ".bin")
_WRAPPER_KEYS = ("net", "state_dict")  # FER2013 `{'net': ...}`, Lightning-style `{'state_dict': ...}`
_BN_LEAVES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


# ---------------------------------------------------------------------------------------------------------
# Files


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
      FileNotFoundError, ValueError (unknown format, unreadable or not a state dict) or ImportError (torch
      missing for a torch file); every message names the file.
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
        np.savez(f, **flat)


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


# ---------------------------------------------------------------------------------------------------------
# Generic module conversion


def _sub_dict(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Entries under `prefix` (a module path such as `cnn.cnn_backbone`), with the prefix removed."""
    if not prefix:
        return dict(sd)
    head = prefix.rstrip(".") + "."
    return {k[len(head) :]: v for k, v in sd.items() if k.startswith(head)}


def _group_by_module(sd: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """`{"features.0.weight": w}` -> `{"features.0": {"weight": w}}`."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        modules.setdefault(module, {})[leaf] = value
    return modules


def _convert_module(module: str, leaves: Mapping[str, np.ndarray]) -> tuple[Tree, Tree]:
    """One PyTorch conv / linear / BatchNorm module -> (flax params, flax batch_stats)."""
    f32 = {k: np.asarray(v, np.float32) for k, v in leaves.items() if k != "num_batches_tracked"}
    if "running_mean" in leaves:
        expected = _BN_LEAVES
        if absent := {"weight", "bias", "running_var"} - set(leaves):
            raise ValueError(f"{module}: BatchNorm without {sorted(absent)} (affine=False is not supported)")
        params = {"scale": f32["weight"], "bias": f32["bias"]}
        stats = {"mean": f32["running_mean"], "var": f32["running_var"]}
    elif "weight" in leaves and leaves["weight"].ndim in (2, 4, 5):
        expected = {"weight", "bias"}
        weight = f32["weight"]
        # Conv [O, I, *kernel] -> [*kernel, I, O] (2D and 3D); linear [out, in] -> [in, out].
        params = {"kernel": weight.transpose(*range(2, weight.ndim), 1, 0) if weight.ndim > 2 else weight.T}
        if "bias" in f32:
            params["bias"] = f32["bias"]
        stats = {}
    else:
        shapes = {k: tuple(v.shape) for k, v in leaves.items()}
        raise ValueError(f"{module}: not a conv, linear or BatchNorm layer: {shapes}")
    extra = set(leaves) - expected
    if extra:
        raise ValueError(f"{module}: unexpected entries {sorted(extra)}")
    return {k: np.ascontiguousarray(v) for k, v in params.items()}, stats


def _import_modules(
    state_dict: StateDict, prefix: str, rename: Callable[[str], str | None], what: str
) -> Tree:
    """Converts every module under `prefix`, naming it `rename(torch_module_path)` (a `/` path; None skips
    it)."""
    sd = _sub_dict(_as_numpy(state_dict), prefix)
    params: Tree = {}
    stats: Tree = {}
    for module, leaves in sorted(_group_by_module(sd).items()):
        target = rename(module)
        if target is None:
            continue
        p, s = _convert_module(module, leaves)
        _put(params, target, p)
        if s:
            _put(stats, target, s)
    if not params:
        under = f" under {prefix!r}" if prefix else ""
        raise ValueError(f"no {what} weights found{under}; the state dict starts {sorted(state_dict)[:3]}")
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def _put(tree: Tree, path: str, value: Tree) -> None:
    node = tree
    for part in path.split("/"):
        node = node.setdefault(part, {})
    if node:
        raise ValueError(f"two PyTorch modules map onto {path}")
    node.update(value)


def _unexpected_module(what: str, module: str) -> ValueError:
    return ValueError(f"unexpected module {module!r} in a {what} state dict")


# ---------------------------------------------------------------------------------------------------------
# Trunks


def vgg19_bn_from_torch(state_dict: StateDict, *, prefix: str = "") -> Tree:
    """VGG19-BN weights with torchvision names -> `VGG19BN` variables.

    Reads `features.<i>.*` (conv at i, BatchNorm at i + 1) and, when present, the released code's
    `fc.*` (4608 -> 512). `classifier.*` is ignored: torchvision's ImageNet head or the FER2013 repo's
    512 -> 7 head. The FER2013 checkpoint has no `fc`, so its tree has conv/BN layers only; merge it with
    `allow_missing=["fc"]`.

    Args:
      state_dict: PyTorch names -> tensors or arrays (see `load_torch_file`).
      prefix: module path of the VGG inside a larger state dict, e.g. `"cnn.cnn_backbone"`.

    Returns:
      `{"params": {"features_0": {"kernel", "bias"}, "features_1": {"scale", "bias"}, ..., "fc"?},
      "batch_stats": {"features_1": {"mean", "var"}, ...}}`.
    """

    def rename(module: str) -> str | None:
        if m := re.fullmatch(r"features\.(\d+)", module):
            return f"features_{m[1]}"
        if module == "fc":
            return "fc"
        if module == "classifier" or module.startswith("classifier."):
            return None
        raise _unexpected_module("VGG19-BN", module)

    return _import_modules(state_dict, prefix, rename, "VGG19-BN")


# Children of torchvision's resnet18 by position, for `nn.Sequential(*list(resnet.children())[:-1])`
# wrappers such as the released code's audio trunk (2 is ReLU, 3 max pool, 8 average pool: no weights).
_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def resnet18_from_torch(state_dict: StateDict, *, in_channels: int | None = None, prefix: str = "") -> Tree:
    """ResNet-18 weights with torchvision names -> `ResNet18` variables (`fc.*` is ignored).

    Also reads the positional names of a `nn.Sequential(*list(resnet18.children())[:-1])` wrapper
    (`0.weight` = conv1, `1.*` = bn1, `4.0.conv1.weight` = layer1.0.conv1, ...).

    Args:
      state_dict: PyTorch names -> tensors or arrays.
      in_channels: input channels of the target model; None keeps the checkpoint's. With 1 and a
        3-channel conv1 (ImageNet weights), conv1 is summed over its input channels: the standard
        adaptation, and exact for a single-channel input copied to three channels.
      prefix: module path of the ResNet inside a larger state dict.

    Returns:
      `{"params": {"conv1", "bn1", "layer1_0": {"conv1", "bn1", ...}, ...}, "batch_stats": {...}}`.
    """

    def rename(module: str) -> str | None:
        first, _, rest = module.partition(".")
        if first in _RESNET_CHILDREN:
            module = _RESNET_CHILDREN[first] + (f".{rest}" if rest else "")
        if module in ("conv1", "bn1"):
            return module
        if m := re.fullmatch(r"layer([1-4])\.(\d+)\.(conv1|bn1|conv2|bn2)", module):
            return f"layer{m[1]}_{m[2]}/{m[3]}"
        if m := re.fullmatch(r"layer([1-4])\.(\d+)\.downsample\.([01])", module):
            return f"layer{m[1]}_{m[2]}/downsample_{m[3]}"
        if module == "fc":
            return None
        raise _unexpected_module("ResNet-18", module)

    tree = _import_modules(state_dict, prefix, rename, "ResNet-18")
    return adapt_conv1_channels(tree, in_channels)


def r3d18_from_torch(state_dict: StateDict, *, prefix: str = "") -> Tree:
    """R3D-18 weights with torchvision `r3d_18` names -> `R3D18` variables (`fc.*` is ignored).

    torchvision's Kinetics-400 checkpoint (`R3D_18_Weights.KINETICS400_V1`, 33,371,472 parameters, of which
    the trunk holds 33,166,272) imports as is: `stem.0` -> `stem_0`, `stem.1` -> `stem_1`,
    `layer2.0.conv1.0` -> `layer2_0/conv1_0`, `layer2.0.conv1.1` -> `layer2_0/conv1_1`,
    `layer2.0.downsample.1` -> `layer2_0/downsample_1`. Those weights expect Kinetics-normalised input,
    which `R3D18(normalize=True)` (the default) applies.

    Args:
      state_dict: PyTorch names -> tensors or arrays.
      prefix: module path of the R3D-18 inside a larger state dict.

    Returns:
      `{"params": {"stem_0", "stem_1", "layer1_0": {"conv1_0", "conv1_1", ...}, ...}, "batch_stats": ...}`.
    """

    def rename(module: str) -> str | None:
        if module in ("stem.0", "stem.1"):
            return module.replace(".", "_")
        if m := re.fullmatch(r"layer([1-4])\.(\d+)\.(conv1|conv2|downsample)\.([01])", module):
            return f"layer{m[1]}_{m[2]}/{m[3]}_{m[4]}"
        if module == "fc":
            return None
        raise _unexpected_module("R3D-18", module)

    return _import_modules(state_dict, prefix, rename, "R3D-18")


# ---------------------------------------------------------------------------------------------------------
# Recurrent and linear layers


_RECURRENT_LEAVES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _recurrent_from_torch(state_dict: StateDict, prefix: str, kind: str | None) -> Tree:
    """One-layer `nn.GRU` / `nn.LSTM` -> `GRU` / `LSTM` params; `kind` None infers it from the shapes."""
    sd = _sub_dict(_as_numpy(state_dict), prefix)
    extra = set(sd) - set(_RECURRENT_LEAVES)
    missing = set(_RECURRENT_LEAVES) - set(sd)
    if extra or missing:
        # Extra names are stacked (`_l1`), bidirectional (`_reverse`) or projected (`weight_hr`) layers.
        raise ValueError(
            f"{prefix or 'recurrent layer'}: expected exactly {list(_RECURRENT_LEAVES)} of a one-layer, "
            f"one-direction layer with biases; missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    w_ih, w_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    hidden = w_hh.shape[1]
    gates = {"gru": 3, "lstm": 4}
    found = w_hh.shape[0] // hidden
    if kind is not None and found != gates[kind]:
        raise ValueError(f"{prefix}: weight_hh_l0 {w_hh.shape} is not a {kind} of hidden size {hidden}")
    if found not in gates.values() or w_hh.shape[0] != found * hidden or w_ih.shape[0] != w_hh.shape[0]:
        raise ValueError(
            f"{prefix}: inconsistent shapes weight_ih_l0 {w_ih.shape}, weight_hh_l0 {w_hh.shape}"
        )
    params = {
        "input": {"kernel": np.ascontiguousarray(w_ih.T), "bias": sd["bias_ih_l0"]},
        "hidden_kernel": np.ascontiguousarray(w_hh.T),
        "hidden_bias": sd["bias_hh_l0"],
    }
    return {"params": params}


def gru_from_torch(state_dict: StateDict, prefix: str = "") -> Tree:
    """One-layer `nn.GRU` (`weight_ih_l0`, ...; gate order r, z, n) -> `GRU` params."""
    return _recurrent_from_torch(state_dict, prefix, "gru")


def lstm_from_torch(state_dict: StateDict, prefix: str = "") -> Tree:
    """One-layer `nn.LSTM` (`weight_ih_l0`, ...; gate order i, f, g, o) -> `LSTM` params."""
    return _recurrent_from_torch(state_dict, prefix, "lstm")


def linear_from_torch(state_dict: StateDict, prefix: str = "") -> Tree:
    """`nn.Linear` (`<prefix>.weight` [out, in], `<prefix>.bias`) -> `nn.Dense` params."""
    sd = _sub_dict(_as_numpy(state_dict), prefix)
    if "weight" not in sd or sd["weight"].ndim != 2 or set(sd) - {"weight", "bias"}:
        shapes = {k: v.shape for k, v in sd.items()}
        raise ValueError(f"{prefix or 'state dict'} is not a linear layer: {shapes}")
    params, _ = _convert_module(prefix, sd)
    return {"params": params}


# ---------------------------------------------------------------------------------------------------------
# Whole networks of the released code


def _numbered_linears(sd: Mapping[str, np.ndarray], prefix: str) -> list[Tree]:
    """Linear layers `<prefix>1`, `<prefix>2`, ... in order, checking there are no gaps."""
    numbers = sorted({int(m[1]) for k in sd if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))})
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"head layers {prefix}N should be numbered 1..N, found {numbers}")
    return [linear_from_torch(sd, f"{prefix}{n}")["params"] for n in numbers]


def _check_known(sd: Mapping[str, np.ndarray], prefixes: Iterable[str], network: str) -> None:
    prefixes = tuple(prefixes)
    unknown = sorted(k for k in sd if not k.startswith(prefixes))
    if unknown:
        raise ValueError(f"{network} state dict has entries outside {list(prefixes)}: {unknown[:10]}")


def _assemble(parts: Mapping[str, Tree]) -> Tree:
    """`{"visual_cnn": {"params": a, "batch_stats": b}, ...}` -> `{"params": {"visual_cnn": a}, ...}`."""
    out: Tree = {}
    for module, tree in parts.items():
        for collection, sub in tree.items():
            out.setdefault(collection, {})[module] = sub
    return out


def student_from_torch(state_dict: StateDict) -> Tree:
    """A whole student / visual-only network of the released code -> `Student` variables.

    Expected keys (the released code's `CNN_LSTM_s.state_dict()`):
      `cnn.cnn_backbone.features.<i>.*`, `cnn.cnn_backbone.fc.*`  -> `visual_cnn` (VGG19-BN)
      `rnn.rnn.{weight,bias}_{ih,hh}_l0`                          -> `temporal` (GRU, or LSTM by shape)
      `rnn.out_layer1.*` ... `rnn.out_layer<N>.*`                 -> `head`: dense_0 .. dense_<N-2>, out
    Any other key is an error.
    """
    sd = _as_numpy(state_dict)
    _check_known(sd, ("cnn.cnn_backbone.", "rnn.rnn.", "rnn.out_layer"), "student")
    *hidden, out = _numbered_linears(sd, "rnn.out_layer")
    head = {f"dense_{i}": layer for i, layer in enumerate(hidden)} | {"out": out}
    return _assemble(
        {
            "visual_cnn": vgg19_bn_from_torch(sd, prefix="cnn.cnn_backbone"),
            "temporal": _recurrent_from_torch(sd, "rnn.rnn", None),
            "head": {"params": head},
        }
    )


def teacher_from_torch(state_dict: StateDict, *, audio_in_channels: int | None = None) -> Tree:
    """A whole teacher of the released code -> `Teacher` variables.

    Expected keys (the released code's `CNN_LSTM_Teacher.state_dict()`):
      `cnn.cnn_backbone.features.<i>.*`, `cnn.cnn_backbone.fc.*`  -> `visual_cnn` (VGG19-BN)
      `rnn.rnn.{weight,bias}_{ih,hh}_l0`                          -> `temporal` (GRU, or LSTM by shape)
      `spec_cnn.cnn_spec_backbone.{0,1,4,5,6,7}.*` (ResNet-18 children by position; torchvision names
        `conv1`, `layer1.0...` work too)                          -> `audio_cnn`
      `rnn.out_layer1.*` (visual 1024 -> 1024), `rnn.out_layer2 .. <N-1>` (fused), `rnn.out_layer<N>`
                                                                  -> `head`: visual_proj, fused_*, out
    The released audio trunk reads 3-channel spectrogram pictures; `audio_in_channels=1` sums its conv1
    over channels for 1-channel log-mel input (see `resnet18_from_torch`). Any other key is an error.
    """
    sd = _as_numpy(state_dict)
    _check_known(
        sd, ("cnn.cnn_backbone.", "rnn.rnn.", "rnn.out_layer", "spec_cnn.cnn_spec_backbone."), "teacher"
    )
    visual_proj, *fused, out = _numbered_linears(sd, "rnn.out_layer")
    if not fused:
        raise ValueError("teacher head needs at least three layers rnn.out_layer1..N")
    head = {"visual_proj": visual_proj, "out": out} | {f"fused_{i}": layer for i, layer in enumerate(fused)}
    audio = resnet18_from_torch(sd, in_channels=audio_in_channels, prefix="spec_cnn.cnn_spec_backbone")
    return _assemble(
        {
            "visual_cnn": vgg19_bn_from_torch(sd, prefix="cnn.cnn_backbone"),
            "temporal": _recurrent_from_torch(sd, "rnn.rnn", None),
            "audio_cnn": audio,
            "head": {"params": head},
        }
    )


# ---------------------------------------------------------------------------------------------------------
# Merging into a model


def merge_into(
    variables: Mapping[str, Any],
    imported: Mapping[str, Any],
    *,
    path: str = "",
    allow_missing: Iterable[str] = (),
) -> Tree:
    """Returns a copy of `variables` with `imported` placed at `path`, every name and shape checked.

    Args:
      variables: the model's variables (`model.init(...)`, or `jax.eval_shape` of it).
      imported: a converter's `{"params": ..., "batch_stats": ...}` tree when `path` is a module path
        (`"visual_cnn"`, `"head/out"`, or `""` for the whole model); a bare subtree of one collection when
        `path` starts with a collection (`"params/temporal"`).
      path: where the imported tree goes, `/`-separated.
      allow_missing: names relative to `path` (`"fc"`, `"fc/kernel"`) that may keep their current values
        when `imported` lacks them, e.g. the 4608 -> 512 fc absent from the FER2013 checkpoint.

    Returns:
      A new tree (the input is not modified); imported leaves are numpy arrays in the model's dtype.

    Raises:
      ValueError listing every shape mismatch, missing and unexpected name with its shape.
    """
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] in variables:
        imported, parts = {parts[0]: imported}, parts[1:]
    if unknown := [c for c in imported if c not in variables and c not in COLLECTIONS]:
        raise ValueError(
            f"imported tree has top-level names {unknown}; expected collections {list(COLLECTIONS)}, "
            "or give a path that starts with one (e.g. 'params/temporal') for a bare subtree"
        )
    allowed = tuple(a.strip("/") for a in allow_missing)
    module = "/".join(parts)
    collections = set(imported) | {c for c in variables if _get(variables[c], parts) is not None}
    errors: list[str] = []
    updates: dict[tuple[str, ...], np.ndarray] = {}
    for collection in sorted(collections):
        target = _get(variables.get(collection, {}), parts)
        have = flatten_tree(target) if isinstance(target, Mapping) else {}
        sub = imported.get(collection, {})
        if not isinstance(sub, Mapping):
            raise ValueError(f"imported {collection!r} should be a tree of arrays, got {type(sub).__name__}")
        new = flatten_tree(sub)
        where = "/".join([collection, *parts])
        if target is None and new:
            errors.append(
                f"no {where} in the model (its top-level names: {sorted(variables.get(collection, {}))})"
            )
            continue
        for name in sorted(set(have) | set(new)):
            full = f"{where}/{name}"
            if name not in new:
                if not any(name == a or name.startswith(a + "/") for a in allowed):
                    errors.append(f"missing {full} {_shape(have[name])} (in the model, not imported)")
            elif name not in have:
                errors.append(f"unexpected {full} {_shape(new[name])} (imported, not in the model)")
            elif _shape(have[name]) != _shape(new[name]):
                errors.append(
                    f"shape mismatch {full}: model {_shape(have[name])}, imported {_shape(new[name])}"
                )
            else:
                value = np.asarray(new[name], dtype=have[name].dtype)
                updates[(collection, *parts, *name.split("/"))] = value
    if errors:
        raise ValueError(f"cannot merge weights into {module or 'the model'!r}:\n  " + "\n  ".join(errors))
    out = _copy_tree(variables)
    for keys, value in updates.items():
        node = out
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return out


def _get(tree: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _shape(leaf: Any) -> tuple[int, ...]:
    # `.shape` first: jax.ShapeDtypeStruct leaves (from jax.eval_shape) have no array to hand to numpy.
    return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))


def _copy_tree(tree: Mapping[str, Any]) -> Tree:
    # Copies the mappings (FrozenDicts become dicts); leaves are shared, as arrays are not changed in place.
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


__all__ = [
    "adapt_conv1_channels",
    "expected_trunk",
    "flatten_tree",
    "gru_from_torch",
    "import_trunk",
    "linear_from_torch",
    "load_npz",
    "load_torch_file",
    "load_trunk",
    "lstm_from_torch",
    "merge_into",
    "r3d18_from_torch",
    "resnet18_from_torch",
    "save_npz",
    "student_from_torch",
    "teacher_from_torch",
    "torch_to_npz",
    "unflatten_tree",
    "vgg19_bn_from_torch",
]


# ---------------------------------------------------------------------------------------------------------
# Trunk initialisation files, and the `import` command


TRUNKS = ("vgg19_bn", "resnet18")  # --arch values: the visual (VGG19-BN) and audio (ResNet-18) trunks


def adapt_conv1_channels(tree: Tree, in_channels: int | None) -> Tree:
    """A ResNet-18 tree whose `conv1` takes `in_channels` inputs (None: as it is).

    A 3-channel conv1 (ImageNet weights) folds into a 1-channel one by summing over its input channels:
    the standard adaptation, and exact for a single-channel input copied to three channels.
    """
    conv1 = tree["params"]["conv1"]
    have = conv1["kernel"].shape[2]
    if in_channels is None or in_channels == have:
        return tree
    if in_channels == 1 and have == 3:
        conv1["kernel"] = np.asarray(conv1["kernel"]).sum(axis=2, keepdims=True)
        return tree
    raise ValueError(f"cannot adapt ResNet-18 conv1 from {have} to {in_channels} input channels")


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


def _define_flags() -> None:
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


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
