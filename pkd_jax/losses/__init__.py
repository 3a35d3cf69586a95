"""Losses of privileged knowledge distillation, as small pure functions that compose.

Conventions:
  * predictions and labels are [B, T, K] (K targets, e.g. valence and arousal), embeddings [B, T, D];
  * `outputs` holds the student's `pred` and `emb` and, when distilling, the frozen teachers'
    `teacher_pred` and `teacher_emb` (a tuple, one per teacher; a single array is one teacher);
  * `batch` holds `labels` [B, T, K] and optionally `label_mask` [B, T] (1 where the label is valid,
    e.g. not Aff-Wild2's -5) and `frame_mask` [B, T] (1 for a real frame, 0 for padding).

A loss *term* is `term(outputs, batch) -> values`, either a scalar (computed over the whole batch) or
one value per sequence [B]. A *gate* is `gate(teacher_pred, labels, mask) -> GateWeights`: the weights
of the CCC and the distillation terms, again scalars or per sequence. `compose` combines them as

    loss = mean over valid sequences of (w_ccc * L_ccc + w_distill * L_distill)

with broadcasting, so batch-level and per-sequence pieces mix freely: a per-sequence distillation term
gets each sequence's gate weight, a batch-level one is scaled by the mean gate weight. Built-in names:
  * CCC terms: "flattened" (CCC over all frames of the batch, per target) or "per_sequence";
  * distillation terms (`DISTILL_TERMS`, level in brackets):
      - "per_frame" [sequence]: 1 - cosine per frame, averaged (the paper's L_cos);
      - "flattened_cosine" [batch]: the released code: one cosine between the whole batch's embeddings
        flattened into single vectors;
      - "mse" [sequence]: FitNets feature regression, mean squared embedding difference;
      - "similarity" [batch]: similarity-preserving KD, frame-by-frame similarity matrices;
      - "rkd" [batch]: relational KD, pairwise distances and triplet angles;
      - "pkdot" [batch]: PKDOT, a Sinkhorn divergence between the rows of top-k reduced cosine
        similarity matrices (needs `ott-jax`);
      - "response" [sequence] / "response_mse" [sequence]: the student's predictions regressed on the
        teacher's by 1 - CCC or by squared error;
  * gates: "none" (eq. 4: alpha * L_cos + (1 - alpha) * L_ccc), "paper" (eq. 5-7, per sequence) and
    "released_code" (the batch-level rule of the paper's released code);
  * gate contexts, where the gate's gamma = 1 - CCC(teacher, labels) is measured: "clip" (each training
    sequence itself), "window" (a longer stretch of the same video around it, precomputed from the
    teacher's track and carried in `batch["gate_gamma"]`, see `pkd_jax.precompute.gate_track`) or "batch"
    (all frames of the batch flattened). CCC over a few frames of smooth labels is near 0 for any
    predictor, so a gate fed clip-level gamma rarely trusts even a good teacher.

Modules: `ccc` (CCC, masks), `gates`, `distill` (cosine, feature, response terms), `relational`
(similarity-preserving and relational KD), `pkdot` (optimal transport), and `compose` (the loss of one
teacher or several, each gated, combined by "average" or "best").
"""

from pkd_jax.losses.ccc import (
    CCC_EPS,
    CCC_REDUCTIONS,
    Array,
    Batch,
    LossFn,
    Outputs,
    TermFn,
    ccc,
    ccc_loss,
    ccc_term,
    label_mask,
)
from pkd_jax.losses.compose import (
    COMBINE_RULES,
    DISTILL_TERMS,
    PartsFn,
    combine_teachers,
    compose,
    compose_parts,
    distill_term,
)
from pkd_jax.losses.distill import (
    COS_EPS,
    RESPONSE_METRICS,
    cosine_distillation,
    cosine_term,
    mse_distillation,
    mse_term,
    response_distillation,
    response_term,
)
from pkd_jax.losses.gates import (
    GATE_CONTEXTS,
    GATE_NAMES,
    GateFn,
    GateWeights,
    gate_gamma,
    gate_none,
    gate_paper,
    gate_released_code,
    make_gate,
)
from pkd_jax.losses.pkdot import pkdot_distillation, pkdot_term, sinkhorn_divergence
from pkd_jax.losses.relational import rkd_distillation, rkd_term, similarity_distillation, similarity_term

__all__ = [
    "CCC_EPS",
    "CCC_REDUCTIONS",
    "COMBINE_RULES",
    "COS_EPS",
    "DISTILL_TERMS",
    "GATE_CONTEXTS",
    "GATE_NAMES",
    "RESPONSE_METRICS",
    "Array",
    "Batch",
    "GateFn",
    "GateWeights",
    "LossFn",
    "Outputs",
    "PartsFn",
    "TermFn",
    "ccc",
    "ccc_loss",
    "ccc_term",
    "combine_teachers",
    "compose",
    "compose_parts",
    "cosine_distillation",
    "cosine_term",
    "distill_term",
    "gate_gamma",
    "gate_none",
    "gate_paper",
    "gate_released_code",
    "label_mask",
    "make_gate",
    "mse_distillation",
    "mse_term",
    "pkdot_distillation",
    "pkdot_term",
    "response_distillation",
    "response_term",
    "rkd_distillation",
    "rkd_term",
    "similarity_distillation",
    "similarity_term",
    "sinkhorn_divergence",
]
