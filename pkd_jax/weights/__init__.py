"""Pretrained weights: PyTorch state dicts and `.npz` files -> Flax variable trees.

Converters return `{"params": ..., "batch_stats": ...}` trees of numpy float32 arrays for one module (or a
whole model); `merge_into` places them into a model's variables and checks every name and shape, so a
weight is never dropped or left at its random init without being asked for.

Modules:
  `files`: reading PyTorch checkpoints and `.npz` files (never running pickled code), `save_npz` /
    `load_npz`, `flatten_tree` / `unflatten_tree`.
  `convert`: PyTorch -> Flax layout rules, per layer (conv, BatchNorm, linear, GRU, LSTM) and per trunk
    (VGG19-BN, ResNet-18, R3D-18).
  `networks`: whole student / teacher networks of the released code.
  `merge`: `merge_into`, placing an imported tree into a model's variables.
  `trunks`: trunk initialisation files for `config.pretrained.*` (`load_trunk`, `import_trunk`).
  `cli`: the `python -m pkd_jax.weights import` command (not imported here).

Typical use::

    variables = model.init(key, frames)  # or jax.eval_shape(model.init, key, frames)
    sd = load_torch_file("PrivateTest_model.t7")  # FER2013 VGG19: no 4608->512 fc in it
    variables = merge_into(variables, vgg19_bn_from_torch(sd), path="visual_cnn", allow_missing=["fc"])
"""

from pkd_jax.weights.convert import (
    adapt_conv1_channels,
    gru_from_torch,
    linear_from_torch,
    lstm_from_torch,
    r3d18_from_torch,
    resnet18_from_torch,
    vgg19_bn_from_torch,
)
from pkd_jax.weights.files import COLLECTIONS as COLLECTIONS
from pkd_jax.weights.files import TORCH_SUFFIXES as TORCH_SUFFIXES
from pkd_jax.weights.files import StateDict as StateDict
from pkd_jax.weights.files import Tree as Tree
from pkd_jax.weights.files import (
    flatten_tree,
    load_npz,
    load_torch_file,
    save_npz,
    torch_to_npz,
    unflatten_tree,
)
from pkd_jax.weights.merge import merge_into
from pkd_jax.weights.networks import student_from_torch, teacher_from_torch
from pkd_jax.weights.trunks import TRUNKS as TRUNKS
from pkd_jax.weights.trunks import expected_trunk, import_trunk, load_trunk

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
