"""PyTorch state dicts -> Flax variable trees, one layer or one trunk at a time.

Converters return `{"params": ..., "batch_stats": ...}` trees of numpy float32 arrays for one module;
`pkd_jax.weights.merge.merge_into` places them into a model's variables.

Layout rules (PyTorch -> Flax): conv weight [O, I, kh, kw] -> kernel [kh, kw, I, O]; linear weight
[out, in] -> kernel [in, out]; BatchNorm weight, bias -> params scale, bias and running_mean, running_var ->
batch_stats mean, var (`num_batches_tracked` is dropped); `features.3` -> `features_3`,
`layer2.0.downsample.1` -> `layer2_0/downsample_1`. Recurrent layers keep PyTorch's gate order, so their
matrices are only transposed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np

from pkd_jax.weights.files import StateDict, Tree, _as_numpy

_BN_LEAVES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


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
