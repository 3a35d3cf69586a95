"""Host-side evaluation metrics for continuous valence/arousal prediction.

Everything here is plain numpy in float64 so that evaluation numbers do not depend on the
accelerator's precision. The central metric is the concordance correlation coefficient

    CCC(x, y) = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))**2)

with population (1/N) moments, computed from them by `pkd_jax.ccc_kernel` (the loss's CCC too) with no
eps. A denominator that is (numerically) zero -- no frames, or both sequences constant and equal --
yields CCC 0.0 instead of NaN, so a degenerate video scores as "no agreement" rather than poisoning
averages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from pkd_jax.ccc_kernel import METRIC_EPS, ccc_from_moments

__all__ = ["PostProcessing", "StreamingCCC", "ccc_np", "evaluate_videos"]


def _leading_mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcasts a frame mask ([...]) or full mask ([..., K]) to ``shape`` as bool."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask) != 0
    if m.ndim < len(shape):
        # Fewer dims than the data: a frame mask over the leading dims, shared by all targets.
        m = m[..., None]
    try:
        return np.broadcast_to(m, shape)
    except ValueError as e:
        raise ValueError(f"mask of shape {np.shape(mask)} does not fit data {shape}") from e


class StreamingCCC:
    """Streaming per-target CCC accumulator (float64), mergeable across hosts or videos.

    The state per target is (n, mean_x, mean_y, M2_x, M2_y, C_xy): the count, the means and the
    centred sums of squares / cross-products. Each update computes exact two-pass centred
    statistics for its batch and folds them in with Chan et al.'s parallel merge.

    Why Chan rather than shifted raw sums: the naive sum-of-squares formula cancels
    catastrophically when the data sit on a large offset, and while shifting by the first batch's
    mean fixes that for one stream, ``merge`` must combine accumulators whose shifts differ
    (different videos or hosts), which would reintroduce the cancellation. Centred statistics
    merge symmetrically and stay accurate regardless of offset or merge order.
    """

    def __init__(self, num_targets: int | None = None) -> None:
        """Creates an empty accumulator.

        Args:
            num_targets: K, if known. Otherwise it is fixed by the first ``update``.
        """
        self._k: int | None = None
        if num_targets is not None:
            self._init_state(num_targets)

    def _init_state(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"num_targets must be >= 1, got {k}")
        self._k = k
        self._n = np.zeros(k, np.float64)
        self._mean_x = np.zeros(k, np.float64)
        self._mean_y = np.zeros(k, np.float64)
        self._m2_x = np.zeros(k, np.float64)
        self._m2_y = np.zeros(k, np.float64)
        self._c_xy = np.zeros(k, np.float64)

    @property
    def num_targets(self) -> int | None:
        """K, or None before the first update."""
        return self._k

    @property
    def count(self) -> np.ndarray:
        """Number of unmasked frames seen per target, float64 [K]."""
        return self._n.copy() if self._k is not None else np.zeros(0, np.float64)

    def _merge_moments(
        self,
        n: np.ndarray,
        mean_x: np.ndarray,
        mean_y: np.ndarray,
        m2_x: np.ndarray,
        m2_y: np.ndarray,
        c_xy: np.ndarray,
    ) -> None:
        """Chan's pairwise combination of this state with another set of centred moments."""
        n_a = self._n
        total = n_a + n
        # Guard empty targets: the weights are 0 there, so the result is the (zero) prior state.
        safe = np.where(total > 0, total, 1.0)
        dx = mean_x - self._mean_x
        dy = mean_y - self._mean_y
        w = n / safe
        cross = n_a * n / safe
        self._mean_x = self._mean_x + dx * w
        self._mean_y = self._mean_y + dy * w
        self._m2_x = self._m2_x + m2_x + dx * dx * cross
        self._m2_y = self._m2_y + m2_y + dy * dy * cross
        self._c_xy = self._c_xy + c_xy + dx * dy * cross
        self._n = total

    def update(self, pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Adds a batch of frames.

        Args:
            pred: Predictions, shape [..., K], or [...] which is treated as K=1 (1-D input
                always; N-D input only if the accumulator was built with ``num_targets=1``).
            target: Labels with the same shape as ``pred``.
            mask: Optional bool/0-1 mask, broadcastable to the leading dims [...] (one flag per
                frame, shared by all targets) or to the full shape. Masked frames are ignored
                entirely; their values may be garbage, including NaN or inf.

        Raises:
            ValueError: On shape mismatches or a K different from earlier updates.
        """
        x = np.asarray(pred, dtype=np.float64)
        y = np.asarray(target, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"pred shape {x.shape} != target shape {y.shape}")
        if x.ndim == 0:
            raise ValueError("pred must have at least one dimension")
        # Shapes alone cannot tell [..., K] from [...]: 1-D input is always K=1, and an
        # accumulator fixed at K=1 also takes any [...] whose last dim is not 1.
        if x.ndim == 1 or (self._k == 1 and x.shape[-1] != 1):
            x, y = x[..., None], y[..., None]
        m = _leading_mask(mask, x.shape)
        k = x.shape[-1]
        if self._k is None:
            self._init_state(k)
        elif k != self._k:
            raise ValueError(f"got {k} targets, accumulator has {self._k}")

        x = x.reshape(-1, k)
        y = y.reshape(-1, k)
        m = m.reshape(-1, k)
        # Zero masked entries before any arithmetic so NaN/inf garbage there cannot leak in.
        xs = np.where(m, x, 0.0)
        ys = np.where(m, y, 0.0)
        n = m.sum(axis=0).astype(np.float64)
        safe_n = np.maximum(n, 1.0)
        mean_x = xs.sum(axis=0) / safe_n
        mean_y = ys.sum(axis=0) / safe_n
        dx = np.where(m, xs - mean_x, 0.0)
        dy = np.where(m, ys - mean_y, 0.0)
        self._merge_moments(
            n,
            mean_x,
            mean_y,
            (dx * dx).sum(axis=0),
            (dy * dy).sum(axis=0),
            (dx * dy).sum(axis=0),
        )

    def merge(self, other: StreamingCCC) -> StreamingCCC:
        """Folds ``other``'s frames into this accumulator in place.

        The result equals a single accumulator that saw both streams (up to rounding).

        Args:
            other: Another accumulator; it is not modified.

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: If both have a fixed K and they differ.
        """
        if other._k is None:
            return self
        if self._k is None:
            self._init_state(other._k)
        elif self._k != other._k:
            raise ValueError(f"cannot merge K={other._k} into K={self._k}")
        self._merge_moments(other._n, other._mean_x, other._mean_y, other._m2_x, other._m2_y, other._c_xy)
        return self

    def result(self) -> np.ndarray:
        """Per-target CCC as float64 [K].

        Targets with no frames or a degenerate denominator give 0.0. Before any update and
        without ``num_targets`` the result is an empty array.
        """
        if self._k is None:
            return np.zeros(0, np.float64)
        safe_n = np.maximum(self._n, 1.0)
        return ccc_from_moments(
            self._mean_x,
            self._mean_y,
            self._m2_x / safe_n,
            self._m2_y / safe_n,
            self._c_xy / safe_n,
            eps=METRIC_EPS,
            xp=np,
        )


def ccc_np(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> float:
    """One-shot float64 CCC of two 1-D sequences (two-pass reference implementation).

    Args:
        pred: Predictions [T].
        target: Labels [T].
        mask: Optional bool/0-1 mask [T]; masked frames are ignored (NaN there is fine).

    Returns:
        The CCC as a python float; 0.0 when there are no frames or the denominator is degenerate.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"expected equal 1-D shapes, got {x.shape} and {y.shape}")
    if mask is not None:
        m = np.asarray(mask) != 0
        if m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} != data shape {x.shape}")
        x, y = x[m], y[m]
    if x.size == 0:
        return 0.0
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    ccc = ccc_from_moments(
        np.asarray(mx),
        np.asarray(my),
        np.asarray(np.mean(dx * dx)),
        np.asarray(np.mean(dy * dy)),
        np.asarray(np.mean(dx * dy)),
        eps=METRIC_EPS,
        xp=np,
    )
    return float(ccc)


@dataclasses.dataclass(frozen=True)
class PostProcessing:
    """Prediction post-processing applied before scoring.

    ``apply`` runs, in this order: (1) multiply by ``scale``; (2) delay by ``shift_frames``
    (the prediction for frame t is moved to t + shift, compensating annotator reaction lag);
    (3) centred moving average over ``smooth_frames`` frames. All steps keep the length.

    Attributes:
        scale: Multiplicative gain.
        shift_frames: Non-negative delay in frames.
        smooth_frames: Odd moving-average window; 1 disables smoothing.
    """

    scale: float = 1.0
    shift_frames: int = 0
    smooth_frames: int = 1

    def __post_init__(self) -> None:
        if self.shift_frames < 0:
            raise ValueError(f"shift_frames must be >= 0, got {self.shift_frames}")
        # An even window has no centre frame, so "centred" would be ambiguous by half a frame.
        if self.smooth_frames < 1 or self.smooth_frames % 2 == 0:
            raise ValueError(f"smooth_frames must be a positive odd int, got {self.smooth_frames}")

    @classmethod
    def released_code(cls) -> PostProcessing:
        """The paper's released-code setting: x1.45, shift 60 frames, 121-frame moving average."""
        return cls(scale=1.45, shift_frames=60, smooth_frames=121)

    @property
    def is_identity(self) -> bool:
        """Whether ``apply`` leaves predictions unchanged."""
        return self.scale == 1.0 and self.shift_frames == 0 and self.smooth_frames == 1

    @property
    def label(self) -> str:
        """Tag for reports: "raw" for the identity, else e.g. "post-processed (x1.45, MA 121)"."""
        if self.is_identity:
            return "raw"
        parts = []
        if self.scale != 1.0:
            parts.append(f"x{self.scale:g}")
        if self.shift_frames:
            parts.append(f"shift {self.shift_frames}")
        if self.smooth_frames != 1:
            parts.append(f"MA {self.smooth_frames}")
        return f"post-processed ({', '.join(parts)})"

    def apply(self, pred: ArrayLike) -> np.ndarray:
        """Post-processes a prediction sequence.

        Args:
            pred: Predictions [T] or [T, K], time on axis 0. Must be finite: shifting and
                smoothing spread values across frames.

        Returns:
            float64 array of the same shape.
        """
        x = np.asarray(pred, dtype=np.float64) * self.scale
        if x.ndim not in (1, 2):
            raise ValueError(f"expected [T] or [T, K], got shape {x.shape}")
        t = x.shape[0]
        if t == 0:
            return x
        s = self.shift_frames
        if s:
            # Delay: pad the start with the first value and drop the tail to keep length T.
            shifted = np.empty_like(x)
            shifted[: min(s, t)] = x[0]
            shifted[s:] = x[: max(t - s, 0)]
            x = shifted
        if self.smooth_frames > 1:
            half = self.smooth_frames // 2
            # Window sums via a cumulative sum; at the edges divide by the number of frames that
            # actually fall inside the window so there is no pull towards zero.
            csum = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)], axis=0)
            idx = np.arange(t)
            lo = np.maximum(idx - half, 0)
            hi = np.minimum(idx + half + 1, t)
            counts = (hi - lo).astype(np.float64)
            if x.ndim == 2:
                counts = counts[:, None]
            x = (csum[hi] - csum[lo]) / counts
        return x


def _as_tk(arr: ArrayLike, video: str, what: str, k: int) -> np.ndarray:
    """Returns ``arr`` as float64 [T, K], raising a ValueError that names the video."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 1 and k == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] != k:
        raise ValueError(f"video {video!r}: {what} has shape {a.shape}, expected [T, {k}]")
    return a


def evaluate_videos(
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
    target_names: Sequence[str] = ("valence", "arousal"),
    post: PostProcessing | None = None,
) -> dict[str, Any]:
    """Scores per-video predictions with CCC.

    Post-processing (if any) is applied to each video's full prediction sequence before
    masking; labels are never modified. Masks only select which frames are scored.

    Args:
        predictions: video id -> predictions [T, K] (or [T] when K == 1).
        labels: video id -> labels of the same shape.
        masks: Optional video id -> frame mask [T] or [T, K]. Videos absent from it are scored
            on all frames; ids not in ``predictions`` raise.
        target_names: Names of the K targets, in column order.
        post: Optional post-processing; its label is always recorded in the output.

    Returns:
        JSON-serialisable dict with keys "postprocessing" (label string), "per_video"
        ({id: {target: ccc}}), "mean_over_videos" ({target: mean of per-video CCC}) and
        "concatenated" ({target: CCC of all scored frames pooled}).

    Raises:
        ValueError: On mismatched video ids or shapes; the message names the offending video.
    """
    post = post or PostProcessing()
    names = list(target_names)
    k = len(names)
    pred_ids, label_ids = set(predictions), set(labels)
    if pred_ids != label_ids:
        only_pred = sorted(pred_ids - label_ids)
        only_label = sorted(label_ids - pred_ids)
        raise ValueError(f"video ids differ: without labels {only_pred}, without predictions {only_label}")
    if masks is not None and set(masks) - pred_ids:
        raise ValueError(f"masks for unknown video ids {sorted(set(masks) - pred_ids)}")
    if not predictions:
        raise ValueError("no videos to evaluate")

    per_video: dict[str, dict[str, float]] = {}
    pooled = StreamingCCC(k)
    for vid in predictions:
        p = _as_tk(predictions[vid], vid, "prediction", k)
        y = _as_tk(labels[vid], vid, "label", k)
        if p.shape[0] != y.shape[0]:
            raise ValueError(f"video {vid!r}: prediction length {p.shape[0]} != label length {y.shape[0]}")
        m = None
        if masks is not None and vid in masks:
            m = np.asarray(masks[vid])
            if m.shape not in ((p.shape[0],), p.shape):
                raise ValueError(f"video {vid!r}: mask shape {m.shape} does not match prediction {p.shape}")
        if not post.is_identity:
            p = post.apply(p)
        acc = StreamingCCC(k)
        acc.update(p, y, m)
        per_video[vid] = {name: float(v) for name, v in zip(names, acc.result(), strict=True)}
        pooled.merge(acc)

    return {
        "postprocessing": post.label,
        "per_video": per_video,
        "mean_over_videos": {name: float(np.mean([v[name] for v in per_video.values()])) for name in names},
        "concatenated": {name: float(v) for name, v in zip(names, pooled.result(), strict=True)},
    }
