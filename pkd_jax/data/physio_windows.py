"""Physiological feature windows for the input pipeline, from the cache's per-frame features.

The cache holds each recording's raw features (heart rate in bpm, HRV in ms, skin conductance in
microsiemens; `videos/<id>/physio.npy`). People differ far more in their resting heart rate and skin
conductance level than one person varies within a session, so the pipeline z-scores each recording over
itself, as is usual for RECOLA's physiological baselines, and gives every frame a window of them.
"""

from __future__ import annotations

import numpy as np

from pkd_jax.data.cache import Cache, CachedVideo


class PhysioWindows:
    """Windows [len(centre), Wp, F] of z-scored physiological features around given frames."""

    def __init__(self, cache: Cache, offsets: np.ndarray):
        if not cache.has_physio:
            raise ValueError(
                f"{cache.root / 'manifest.json'}: this cache has no physiological recordings; preprocess "
                "the corpus with physio (its recordings_physio/ folder) into a new cache"
            )
        self.cache = cache
        self.offsets = offsets
        self._normalised: dict[str, np.ndarray] = {}

    def normalised(self, video: CachedVideo) -> np.ndarray:
        """float32 [T, F]: the recording's features z-scored over the recording."""
        if video.video_id not in self._normalised:
            if video.physio is None:
                raise ValueError(f"{self.cache.root}: video {video.video_id!r} has no physio.npy")
            values = np.asarray(video.physio, np.float64)
            std = values.std(0)
            self._normalised[video.video_id] = (
                (values - values.mean(0)) / np.where(std > 0, std, 1.0)
            ).astype(np.float32)
        return self._normalised[video.video_id]

    def __call__(self, video: CachedVideo, centre: np.ndarray) -> np.ndarray:
        """The windows around frames `centre`; 0 (the recording's mean) outside the recording."""
        values = self.normalised(video)
        rows = centre[:, None] + self.offsets[None, :]
        inside = (rows >= 0) & (rows < len(values))
        out = values[np.clip(rows, 0, len(values) - 1)]
        out[~inside] = 0.0
        return out
