"""Model complexity: parameters and multiply-accumulates (MACs), the paper's Table 3.

MACs are counted analytically from the jaxpr of the forward pass: every convolution and matrix product
contributes output elements x contraction size. XLA's own FLOP estimate of the compiled program is
reported beside it as a cross-check (FLOPs ~ 2 x MACs plus the element-wise work).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np


def param_count(variables: Any) -> int:
    """Trainable parameters (the `params` collection; BatchNorm running statistics excluded)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])))


def _eqn_macs(eqn: Any) -> int:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval
        out = eqn.outvars[0].aval
        dims = eqn.params["dimension_numbers"]
        kernel_in = rhs.shape[dims.rhs_spec[1]]
        kernel_spatial = math.prod(rhs.shape[i] for i in dims.rhs_spec[2:])
        return math.prod(out.shape) * kernel_in * kernel_spatial
    if name == "dot_general":
        lhs = eqn.invars[0].aval
        (contract_lhs, _), _ = eqn.params["dimension_numbers"]
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[i] for i in contract_lhs)
    return 0


def _sub_jaxprs(params: dict[str, Any]) -> list[Any]:
    """Jaxprs nested in an equation's parameters (jit bodies, scan bodies, branches)."""
    found = []
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, jax.extend.core.Jaxpr):
                found.append(item)
    return found


def _jaxpr_macs(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _eqn_macs(eqn)
        repeat = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        total += repeat * sum(_jaxpr_macs(sub) for sub in _sub_jaxprs(eqn.params))
    return total


def count_macs(fn: Any, *args: Any) -> int:
    """Analytic MACs of `fn(*args)` (convolutions and matrix products, scans unrolled by length)."""
    closed = jax.make_jaxpr(fn)(*args)
    return _jaxpr_macs(closed.jaxpr)


def xla_flops(fn: Any, *args: Any) -> float:
    """XLA's FLOP estimate of the compiled `fn(*args)`."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def model_complexity(model: Any, variables: Any, inputs: tuple[jax.Array, ...]) -> dict[str, float]:
    """Parameters, analytic MACs and XLA FLOPs of one inference forward pass on `inputs`."""
    forward = lambda v, *x: model.apply(v, *x, train=False)
    return {
        "params": param_count(variables),
        "macs": count_macs(forward, variables, *inputs),
        "xla_flops": xla_flops(forward, variables, *inputs),
    }


def per_frame_inputs(
    model_kind: str, face_size: int, audio_shape: tuple[int, int, int]
) -> tuple[jax.Array, ...]:
    """One clip of one frame (and its audio window): per-frame complexity as in Table 3."""
    frames = jnp.zeros((1, 1, face_size, face_size, 3))
    if model_kind == "teacher":
        return frames, jnp.zeros((1, 1, *audio_shape))
    return (frames,)
