# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inspect a run: predictions, the gate's view of the teacher, and what is distilled
#
# Loads a trained student (by default the cosine student of `loss_variants.ipynb`, run that first) and
# its teacher, and plots
# 1. the student's dev predictions against the gold standard, with the spans where no face was found;
# 2. the teacher's gamma = 1 - CCC over the training videos, in the gate's context, against theta;
# 3. the teacher's and the student's frame-by-frame cosine-similarity matrices over one training batch,
#    the structure that the `similarity` and `pkdot` terms distil.
#
# `PKD_NOTEBOOK_WORKDIR` (default `runs/notebooks`) is where `loss_variants` trained; `PKD_STUDENT` names
# any other student workdir.

# %%
import json
import os
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

from pkd_jax import api
from pkd_jax.config import build
from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import train_dataset
from pkd_jax.models.inputs import model_inputs
from pkd_jax.precompute import gate_track

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
WORKDIR = Path(os.environ.get("PKD_NOTEBOOK_WORKDIR", REPO / "runs" / "notebooks")).resolve()
STUDENT = Path(os.environ.get("PKD_STUDENT", WORKDIR / "notebook" / "student_per_frame_seed_0"))
student = api.load(STUDENT)
teacher = api.load(student.config.teacher.workdir)
cache = Cache(build.cache_dir(student.config))
print(f"student: {student.source} (step {student.step}); teacher: {teacher.source}")

# %% [markdown]
# ## 1. Dev predictions against the gold standard

# %%
dev = api.predict_dev(student)
video_id = sorted(dev)[0]
pred, labels = dev[video_id].pred, dev[video_id].labels
face_found = np.asarray(dev[video_id].face_found, bool)
fps = dev[video_id].fps
time_s = np.arange(len(pred)) / fps
fig, axes = plt.subplots(len(student.targets), 1, figsize=(12, 2.6 * len(student.targets)), sharex=True)
for ax, (k, name) in zip(np.atleast_1d(axes), enumerate(student.targets), strict=True):
    ax.plot(time_s, labels[:, k], color="k", lw=1.2, label="gold standard")
    ax.plot(time_s, pred[:, k], color="C1", lw=1.0, label="student")
    missing = np.flatnonzero(np.diff(np.concatenate([[0], ~face_found, [0]]).astype(int)))
    for a, b in zip(missing[::2], missing[1::2], strict=True):
        ax.axvspan(a / fps, b / fps, color="0.85", lw=0)
    ax.set_ylabel(name)
    ax.legend(loc="upper right", fontsize="small")
np.atleast_1d(axes)[-1].set_xlabel(f"time (s), {video_id}; grey: no face found")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The teacher's gamma over time, as the gate sees it
# `gate.json` holds the gate's context and its theta (a quantile of these gammas by default);
# `gate/track.npz` the teacher's per-frame predictions on the training videos.

# %%
gate = json.loads((STUDENT / "gate.json").read_text())
print({k: gate[k] for k in ("gate", "context", "window_frames", "theta", "expected_distilled_share")})
with np.load(STUDENT / "gate" / "track.npz", allow_pickle=False) as stored:
    track = {k: stored[k] for k in stored.files if not k.startswith("_")}
gammas = gate_track.gammas_from_track(
    track, cache, build.target_indices(student.config),
    clip_frames=gate_track.clip_span(student.config), window_frames=gate["window_frames"] or 1,
)  # fmt: skip
fig, ax = plt.subplots(figsize=(12, 3))
for vid, gamma in sorted(gammas.items()):
    ax.plot(np.arange(len(gamma)) / fps, gamma, lw=0.9, label=vid)
ax.axhline(gate["theta"], color="k", ls="--", label=f"theta {gate['theta']:.3f}")
ax.set_xlabel("clip start (s)")
ax.set_ylabel("teacher gamma")
ax.legend(fontsize="small", ncol=4)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. What the structural terms distil: similarity matrices over one batch

# %%
pipeline = build.pipeline_config(teacher.config, batch_size=4, with_audio=True, train=False)
batch = train_dataset(cache, pipeline)[0]


def embeddings(trained) -> np.ndarray:
    """The network's distilled embedding of every frame of the batch, [frames, D]."""
    inputs = model_inputs(trained.model, batch, build.compute_dtype(trained.config))
    _, emb = jax.jit(lambda v, *x: trained.model.apply(v, *x, train=False))(trained.variables, *inputs)
    return np.asarray(emb).reshape(-1, np.asarray(emb).shape[-1])


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
    return unit @ unit.T


fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, (name, trained) in zip(axes, (("teacher", teacher), ("student", student)), strict=True):
    image = ax.imshow(cosine_matrix(embeddings(trained)), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_title(f"{name}: cosine similarity of frames")
    ax.set_xlabel("frame of the batch")
fig.colorbar(image, ax=axes, shrink=0.8)
plt.show()
