"""Whole networks of the released PyTorch code -> `Student` / `Teacher` variables.

Every key of the state dict must belong to a known part (visual trunk, recurrent layer, head, audio
trunk); each part goes through the converters of `pkd_jax.weights.convert`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from pkd_jax.weights.convert import (
    _recurrent_from_torch,
    linear_from_torch,
    resnet18_from_torch,
    vgg19_bn_from_torch,
)
from pkd_jax.weights.files import StateDict, Tree, _as_numpy


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
