"""One synthetic person, shared by both layouts: every random part of a recording (latent emotion, gold
standard, voice and waveform, appearance, face-absent spans, head motion, lighting) drawn from
``(seed, video_id)``, and its rendered frames.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pkd_jax.data.synthetic.config import AbsentSpan, Appearance, SyntheticConfig, Voice
from pkd_jax.data.synthetic.face import FaceRenderer, head_motion, sample_appearance
from pkd_jax.data.synthetic.signals import (
    annotate,
    sample_absent_spans,
    sample_emotion,
    smooth_noise,
    video_rngs,
)
from pkd_jax.data.synthetic.speech import sample_voice, synthesize_audio

_LOG = logging.getLogger(__name__)


def _span_lookup(spans: Sequence[AbsentSpan], n_frames: int) -> list[AbsentSpan | None]:
    """Per-frame span (or None)."""
    per_frame: list[AbsentSpan | None] = [None] * n_frames
    for span in spans:
        per_frame[span.start : span.stop] = [span] * (span.stop - span.start)
    return per_frame


def _resolve_emotion(
    video_id: str,
    n_frames: int | None,
    emotion: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the given ``(valence, arousal)`` (validated, clipped) or samples new ones."""
    if emotion is None:
        if n_frames is None or n_frames < 1:
            raise ValueError(f"{video_id}: need n_frames >= 1 when no emotion is given")
        return sample_emotion(rng, n_frames, config)
    valence, arousal = (np.asarray(x, np.float64) for x in emotion)
    if valence.shape != arousal.shape or valence.ndim != 1 or len(valence) < 1:
        raise ValueError(f"{video_id}: valence and arousal must be equal-length, non-empty 1-D arrays")
    if n_frames is not None and n_frames != len(valence):
        raise ValueError(f"{video_id}: n_frames={n_frames} but the emotion has {len(valence)} frames")
    if not (np.all(np.isfinite(valence)) and np.all(np.isfinite(arousal))):
        raise ValueError(f"{video_id}: non-finite emotion values")
    if np.abs(valence).max() > 1 or np.abs(arousal).max() > 1:
        _LOG.warning("%s: emotion values outside [-1, 1] are clipped", video_id)
    return np.clip(valence, -1.0, 1.0), np.clip(arousal, -1.0, 1.0)


@dataclasses.dataclass
class Subject:
    """One synthetic person: latent emotion, gold standard, voice, and a frame renderer with its motion."""

    video_id: str
    valence: np.ndarray
    arousal: np.ndarray
    gold: dict[str, np.ndarray]
    wave: np.ndarray
    spans: list[AbsentSpan]
    face_visible: np.ndarray
    appearance: Appearance
    voice: Voice
    renderer: FaceRenderer
    head: np.ndarray
    light: np.ndarray  # [T, 2]: gain, slope
    noise_index: np.ndarray
    coefficients: np.ndarray

    @classmethod
    def sample(
        cls,
        video_id: str,
        n_frames: int | None,
        seed: int,
        config: SyntheticConfig,
        emotion: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Subject:
        """Draws every random part of one recording from ``(seed, video_id)``."""
        rngs = video_rngs(seed, video_id)
        valence, arousal = _resolve_emotion(video_id, n_frames, emotion, rngs["emotion"], config)
        n_frames = len(valence)
        appearance = sample_appearance(rngs["appearance"], config)
        voice = sample_voice(rngs["voice"], config)
        spans = sample_absent_spans(rngs["visibility"], n_frames, config)
        face_visible = np.array([s is None for s in _span_lookup(spans, n_frames)])
        wave, jaw = synthesize_audio(valence, arousal, rngs["audio"], config, voice)
        gold = {
            "valence": annotate(valence, rngs["annotation"], config),
            "arousal": annotate(arousal, rngs["annotation"], config),
        }
        motion_rng = rngs["motion"]
        renderer = FaceRenderer(appearance, config, motion_rng)
        head = head_motion(motion_rng, arousal, config)
        drift = config.lighting_drift * smooth_noise(motion_rng, n_frames, 3.0 * config.fps, 2)
        light = np.stack([1.0 + drift[0], 0.5 * drift[1]], 1)  # Overall exposure; left-right balance.
        noise_index = motion_rng.integers(0, len(renderer.noise_bank), n_frames)
        coefficients = np.stack([np.maximum(valence, 0), np.maximum(-valence, 0), arousal, jaw], 1)
        return cls(
            video_id, valence, arousal, gold, wave, spans, face_visible, appearance, voice, renderer,
            head, light, noise_index, coefficients,
        )  # fmt: skip

    @property
    def n_frames(self) -> int:
        return len(self.valence)

    def frames(self) -> Iterator[np.ndarray]:
        """The rendered RGB frames, in order."""
        per_frame_span = _span_lookup(self.spans, self.n_frames)
        for t in range(self.n_frames):
            yield self.renderer.render(
                self.coefficients[t],
                self.head[t],
                tuple(self.light[t]),
                self.noise_index[t],
                per_frame_span[t],
            )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable per-recording parameters (for ``synthetic.json``)."""
        return {
            "n_frames": self.n_frames,
            "face_visible_fraction": float(self.face_visible.mean()),
            "face_absent_spans": [[s.start, s.stop, s.mode] for s in self.spans],
            "appearance": dataclasses.asdict(self.appearance),
            "voice": dataclasses.asdict(self.voice),
        }
