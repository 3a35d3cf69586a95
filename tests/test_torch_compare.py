"""The PyTorch loss of `pkd_jax.testing.torch_train` (which benchmarks/torch_compare.py times) matches
`losses.compose`, and the script's JSON on a tiny config."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from pkd_jax import losses
from pkd_jax.testing.torch_train import make_torch_loss

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "torch_compare.py"


def random_outputs(b: int = 4, t: int = 6, k: int = 2, d: int = 8) -> tuple[dict, dict]:
    """Outputs and a batch where half the sequences have a good teacher (so gates switch both ways),
    one frame is padding and one label is missing."""
    rng = np.random.default_rng(0)
    labels = rng.uniform(-1, 1, (b, t, k)).astype(np.float32)
    teacher_pred = rng.uniform(-1, 1, (b, t, k)).astype(np.float32)
    teacher_pred[: b // 2] = labels[: b // 2] + 0.05 * rng.normal(size=(b // 2, t, k))
    frame_mask = np.ones((b, t), np.float32)
    frame_mask[1, -1] = 0.0
    label_mask = np.ones((b, t), np.float32)
    label_mask[2, 0] = 0.0
    outputs = {
        "pred": rng.uniform(-1, 1, (b, t, k)).astype(np.float32),
        "emb": rng.normal(size=(b, t, d)).astype(np.float32),
        "teacher_pred": teacher_pred,
        "teacher_emb": rng.normal(size=(b, t, d)).astype(np.float32),
    }
    return outputs, {"labels": labels, "label_mask": label_mask, "frame_mask": frame_mask}


LOSS_OPTIONS = [
    ("flattened", None, "paper", "clip"),
    ("per_sequence", None, "paper", "clip"),
    *itertools.product(
        ("flattened", "per_sequence"),
        ("per_frame", "flattened_cosine"),
        ("none", "paper", "released_code"),
        ("clip",),
    ),
    *itertools.product(("flattened",), ("per_frame",), ("paper", "released_code"), ("batch", "window")),
]


@pytest.mark.parametrize("ccc,distill,gate,context", LOSS_OPTIONS)
def test_torch_loss_matches_compose(ccc, distill, gate, context):
    outputs, batch = random_outputs()
    batch["gate_gamma"] = np.array([0.1, 0.5, 0.15, 1.3], np.float32)[: len(batch["labels"])]
    config = ml_collections.ConfigDict(
        {"ccc": ccc, "distill": distill or "per_frame", "gate": gate, "alpha": 0.2, "theta": 0.2,
         "gate_context": context}
    )  # fmt: skip
    jax_fn = losses.compose(ccc=ccc, distill=distill, gate=gate, alpha=0.2, theta=0.2, gate_context=context)

    def jax_loss(pred, emb):
        return jax_fn({**outputs, "pred": pred, "emb": emb}, batch)[0]

    want, want_grads = jax.value_and_grad(jax_loss, argnums=(0, 1))(
        jnp.asarray(outputs["pred"]), jnp.asarray(outputs["emb"])
    )
    t_out = {k: torch.tensor(v, requires_grad=k in ("pred", "emb")) for k, v in outputs.items()}
    t_batch = {
        "labels": torch.tensor(batch["labels"]),
        "mask": torch.tensor(batch["label_mask"] * batch["frame_mask"]),
        "frame_mask": torch.tensor(batch["frame_mask"]),
        "gate_gamma": torch.tensor(batch["gate_gamma"]),
    }
    got = make_torch_loss(config, distill=distill is not None)(t_out, t_batch)
    got.backward()
    np.testing.assert_allclose(float(got.detach()), float(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t_out["pred"].grad.numpy(), want_grads[0], rtol=1e-4, atol=1e-6)
    if distill is not None:
        np.testing.assert_allclose(t_out["emb"].grad.numpy(), want_grads[1], rtol=1e-4, atol=1e-6)


def test_script_json_on_tiny_config():
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".pytest_cache" / "jax_compilation"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    cmd = [
        sys.executable, str(SCRIPT), f"--config={REPO / 'configs' / 'recola_student.py'}:tiny",
        "--kinds=student_cached", "--batch=2", "--steps=1", "--warmup=0", "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert result["kind"] == "student_cached" and result["batch_clips"] == 2 and result["steps"] == 1
    assert result["jax_params"] == result["torch_params"] > 0  # the same network on both sides
    for side in ("jax", "torch"):
        assert (
            0
            < result[f"{side}_step_s_min"]
            <= result[f"{side}_step_s_median"]
            <= result[f"{side}_step_s_max"]
        )
        assert result[f"{side}_frames_per_s"] > 0
        assert np.isfinite(result[f"{side}_loss"])
    assert result["ratio"] == pytest.approx(result["jax_step_s_median"] / result["torch_step_s_median"])
    assert result["jax_compile_s"] > 0 and result["torch_threads"] >= 1
