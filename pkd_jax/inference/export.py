"""Export a trained student's inference function as serialized StableHLO (`jax.export`), for deployment.

    python -m pkd_jax.export --workdir=runs/student --out=student.jax_export [--platforms=cpu,cuda]

The exported function is the student's streaming step with its weights baked in:

    f(frames uint8 [b, t, S, S, 3], carry) -> (predictions float32 [b, t, targets], carry)

with `b` (videos side by side) and `t` (frames) symbolic, so one file serves any chunk length and batch;
the carry is float32 [b, H] for a GRU and a pair of them for an LSTM, zeros at the start of a video.
Frames are face crops as preprocessing makes them (RGB, uint8, missing-face policy applied); the
function scales them to [0, 1] itself. A JSON file beside the export (`<out>.json`) records what a
deployment needs to feed it: face size, frame rate, face-detection settings, missing-face policy,
targets and the carry's shape.

Running it needs only jax (and `flatbuffers`, which serialization uses), not pkd_jax or flax:

    exported = jax.export.deserialize(bytearray(open("student.jax_export", "rb").read()))
    pred, carry = exported.call(frames, carry)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pkd_jax.config import build
from pkd_jax.inference.settings import FACE_FIELDS
from pkd_jax.models import Teacher
from pkd_jax.train.steps import make_stream_step
from pkd_jax.workdir.trained import Trained

FORMAT = "pkd_jax.export/1"


def inference_function(trained: Trained) -> Callable[[jax.Array, Any], tuple[jax.Array, Any]]:
    """`f(frames uint8 [b, t, S, S, 3], carry) -> (pred [b, t, targets], carry)` with the weights closed over."""
    if isinstance(trained.model, Teacher):
        raise ValueError(
            f"{trained.source}: a teacher checkpoint; export serves students and visual-only models "
            "(the camera-only networks)"
        )
    step = make_stream_step(trained.model, build.compute_dtype(trained.config))
    variables = jax.tree.map(jnp.asarray, trained.variables)

    def infer(frames: jax.Array, carry: Any) -> tuple[jax.Array, Any]:
        pred, _, carry = step(variables, {"frames": frames}, carry)
        return pred, carry

    return infer


def export_student(trained: Trained, *, platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """The student's inference function exported with symbolic batch `b` and frame count `t`.

    Args:
      trained: A student or visual-only network (see `pkd_jax.workdir.trained.load_trained`).
      platforms: Lowering platforms, e.g. ("cpu", "cuda"); None: this machine's default platform.
    """
    size = trained.config.data.face_size
    b, t = jax.export.symbolic_shape("b, t")
    frames = jax.ShapeDtypeStruct((b, t, size, size, 3), jnp.uint8)
    carry = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((b, *x.shape[1:]), x.dtype), trained.model.zero_carry(1)
    )
    return jax.export.export(jax.jit(inference_function(trained)), platforms=platforms)(frames, carry)


def metadata(
    trained: Trained, exported: jax.export.Exported, face_settings: dict[str, Any]
) -> dict[str, Any]:
    """What a deployment needs beside the function: input format, preprocessing and the carry."""
    config = trained.config
    carry = [[str(d) for d in aval.shape] for aval in exported.in_avals[1:]]
    return {
        "format": FORMAT,
        "source": str(trained.source),
        "step": trained.step,
        "stage": config.stage,
        "targets": list(trained.targets),
        "frames": {
            "shape": [str(d) for d in exported.in_avals[0].shape],
            "dtype": "uint8",
            "range": "0-255 RGB",
        },
        "carry": {"rnn": config.model.rnn, "shapes": carry, "dtype": "float32", "initial": "zeros"},
        "missing_face": config.data.missing_face,
        "face_settings": {k: face_settings[k] for k in FACE_FIELDS},
        "platforms": list(exported.platforms),
    }


def save(path: str | Path, exported: jax.export.Exported, meta: dict[str, Any]) -> Path:
    """Writes the serialized export to `path` and its metadata to `<path>.json`; returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(exported.serialize())
    meta_path = path.with_name(path.name + ".json")
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta_path


def load(path: str | Path) -> tuple[jax.export.Exported, dict[str, Any]]:
    """(exported function, metadata) written by `save`.

    Raises:
      FileNotFoundError, ValueError: naming the file, when it is missing or not a pkd_jax export.
    """
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    for p in (path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist (an export is <file> and <file>.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a {FORMAT} metadata file")
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # flatbuffer and MLIR errors have no common type
        raise ValueError(f"{path}: not a serialized jax.export function ({e})") from e
    return exported, meta


def zero_carry(meta: dict[str, Any], batch: int) -> Any:
    """The initial carry for `batch` videos, from an export's metadata (no pkd_jax model needed)."""
    shapes = [[batch, *(int(d) for d in s[1:])] for s in meta["carry"]["shapes"]]
    zeros = [np.zeros(s, np.float32) for s in shapes]
    return zeros[0] if meta["carry"]["rnn"] == "gru" else tuple(zeros)
