# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Loss variants: swap the distillation term, or write a gate, in one cell
#
# PKD students with different distillation terms of `pkd_jax.losses`, and one with a gate written in a cell
# below, all distilled from the same teacher and compared with the same visual-only baseline: their dev
# CCC and the share of training sequences their gate distilled.
#
# `PKD_NOTEBOOK_SIZE=tiny` (the default, which `make test` runs with frozen trunks: seconds of corpus, 4
# steps a run) or `demo` (the demo's corpus, pretrained frozen trunks and 600 steps; with
# `PKD_NOTEBOOK_WORKDIR=runs/demo` it reuses the teacher and baseline that `make demo` trained).
# Runs go to `PKD_NOTEBOOK_WORKDIR` (default `runs/notebooks`).
# `PKD_NOTEBOOK_FROZEN=1` is the fast option for a loss sweep: every run's visual trunk is frozen and its
# features are computed once and shared (docs/training.md "Frozen trunks": no trunk fine-tuning, BatchNorm
# in inference mode); give it its own `PKD_NOTEBOOK_WORKDIR`, since a workdir keeps the config it began with.
# One seed: a notebook is for trying things; compare methods with paired seeds
# (`python -m pkd_jax.experiments.paper --config=configs/demo.py:distill`, `:distill,frozen` the fast way).

# %%
import importlib.util
import os
from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from pkd_jax import api, losses
from pkd_jax.experiments import report, runner

SIZE = os.environ.get("PKD_NOTEBOOK_SIZE", "tiny")
REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
WORKDIR = Path(os.environ.get("PKD_NOTEBOOK_WORKDIR", REPO / "runs" / "notebooks")).resolve()
SEED = 0
FROZEN = os.environ.get("PKD_NOTEBOOK_FROZEN", "0") == "1"

spec = importlib.util.spec_from_file_location("demo_config", REPO / "configs" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
args = ["smoke"] if SIZE == "tiny" else []
base = demo.get_config(",".join(args + ["frozen"] * FROZEN) or None)
if SIZE == "tiny":  # the training tests' shapes, so `make test` compiles each program once
    base.unlock()
    base.data.face_size, base.data.clip_frames, base.data.batch_size = 32, 4, 4
    base.data.eval_chunk_frames, base.data.eval_videos_per_batch = 50, 2
    # One preprocessing process: for a corpus of seconds, starting a second costs more than it saves
    base.data.preprocess_workers = 1
    base.lock()
config = runner.prepare_experiment(base, WORKDIR)  # corpus and trunks, as the paper runner prepares them
print(f"size {SIZE}, frozen visual trunk {FROZEN}: {config.train.num_steps} steps per run; under {WORKDIR}")

# %% [markdown]
# ## The teacher and the visual-only baseline
# In the paper runner's layout (`<workdir>/runs/<method>/seed_<k>`); a finished run is only evaluated again.

# %%
runs = {}
for method in ("teacher", "visual"):
    runs[method] = runner.run_dir(WORKDIR, method, SEED)
    api.train(runner.method_config(config, method, SEED, WORKDIR), runs[method])


def student_config(distill: str):
    """The demo's student of this seed (paper gate, the teacher above) with another distillation term."""
    c = runner.method_config(config, "student", SEED, WORKDIR)
    c.unlock()
    c.loss.distill = distill
    c.lock()
    return c


# %% [markdown]
# ## Built-in distillation terms: swap one name
# `per_frame` is the paper's cosine; `similarity` matches the batch's frame-by-frame similarity matrices
# (Tung & Mori 2019); `pkdot` compares the rows of those matrices as point clouds with a Sinkhorn
# divergence (PKDOT). All three use the paper gate.

# %%
for term in ("per_frame", "similarity", "pkdot"):
    runs[f"student {term}"] = WORKDIR / "notebook" / f"student_{term}_seed_{SEED}"
    api.train(student_config(term), runs[f"student {term}"])

# %% [markdown]
# ## A gate of your own
# A gate takes the teacher's predictions, the labels and the mask, and, given a `gamma` keyword, the
# teacher's error measured in the config's gate context (over 250 frames of the video around each
# clip). This one never switches distillation off; it weights the cosine by how good the teacher is there.


# %%
def soft_gate(teacher_pred, labels, mask, *, gamma=None):
    """Distil everywhere, the cosine weighted by alpha * (1 - gamma), the CCC by the rest."""
    trust = 1.0 - jnp.clip(gamma, 0.0, 1.0)
    return losses.GateWeights(
        ccc=1.0 - 0.2 * trust, distill=0.2 * trust, distilled=jnp.ones_like(trust), gamma=gamma
    )


soft = losses.compose(distill="per_frame", gate=soft_gate, gate_context="window")
runs["student soft gate"] = WORKDIR / "notebook" / f"student_soft_gate_seed_{SEED}"
api.train(student_config("per_frame"), runs["student soft gate"], loss=soft)

# %% [markdown]
# ## Dev CCC and distilled share

# %%
names = list(runs)
ccc = np.array([[api.dev_scores(runs[n])[t] for t in ("valence", "arousal")] for n in names])
share = [report.distilled_fraction(runs[n]) if n.startswith("student") else None for n in names]
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
x = np.arange(len(names))
left.bar(x - 0.2, ccc[:, 0], 0.4, label="valence")
left.bar(x + 0.2, ccc[:, 1], 0.4, label="arousal")
left.set_xticks(x, names, rotation=30, ha="right")
left.set_ylabel("dev CCC (raw)")
left.legend()
students = [i for i, s in enumerate(share) if s is not None]
right.bar([names[i] for i in students], [share[i] for i in students], color="C2")
right.set_ylabel("share of sequences distilled")
right.tick_params(axis="x", rotation=30)
fig.tight_layout()
plt.show()
for n, row, s in zip(names, ccc, share, strict=True):
    print(
        f"{n:24} valence {row[0]:+.3f} arousal {row[1]:+.3f}"
        + (f" distilled {s:.2f}" if s is not None else "")
    )
