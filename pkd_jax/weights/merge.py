"""Merging imported trees into a model's variables.

`merge_into` places a converter's tree into a model's variables and checks every name and shape, so a
weight is never dropped or left at its random init without being asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pkd_jax.weights.files import COLLECTIONS, Tree, flatten_tree


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
      ValueError: Listing every shape mismatch, missing and unexpected name with its shape.
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
