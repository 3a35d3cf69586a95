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
import ml_collections
import numpy as np

from pkd_jax import defaults
from pkd_jax.config import build


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


def complexity_table(config: ml_collections.ConfigDict) -> dict[str, dict[str, float]]:
    """Parameters and per-frame MACs of student and teacher, at this config's sizes and at full size
    (RECOLA's for the weak setting, Aff-Wild2's for the strong one).

    Strong setting: the networks need a whole window, so its MACs are counted (`GMACs_per_window`) and
    divided by the frames the trunk sees (L sub-sequences x C sampled frames) for `GMACs_per_frame`.
    """
    strong = build.is_windowed(config)
    full = defaults.affwild2(defaults.get_config("teacher", "affwild2")) if strong else None
    full = full or defaults.get_config("teacher", "recola")
    rows = {}
    for label, source in (("this config", config), ("Aff-Wild2 sizes" if strong else "RECOLA sizes", full)):
        for kind in ("student", "teacher"):
            c = ml_collections.ConfigDict(source.to_dict())
            c.stage = kind
            c.targets = ("arousal",)  # the paper trains one model per dimension
            model = build.build_model(c)
            if strong:
                inputs = build.example_inputs(c, teacher=kind == "teacher")
                frames = c.data.window_subsequences * c.data.clip_frames
            else:
                audio = (64, round(c.data.audio_window_s * 100), 1)  # 64 mels, 10 ms hop
                inputs = per_frame_inputs(kind, c.data.face_size, audio)
                frames = 1
            variables = jax.eval_shape(lambda m=model, x=inputs: m.init(jax.random.key(0), *x))
            forward = lambda v, *x, m=model: m.apply(v, *x, train=False)
            macs = count_macs(forward, variables, *inputs) / 1e9
            rows[f"{kind} ({label})"] = {
                "params_M": param_count(variables) / 1e6,
                "GMACs_per_frame": macs / frames,
                **({"GMACs_per_window": macs} if strong else {}),
            }
    return rows
