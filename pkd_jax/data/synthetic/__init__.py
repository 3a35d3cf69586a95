"""Synthetic audio-visual emotion corpus written in the exact RECOLA (AVEC 2016) layout, or in the
Aff-Wild2 layout.

Each recording is generated from two latent emotion trajectories, valence ``v(t)`` and arousal
``a(t)`` in [-1, 1] at 25 fps, and rendered into a face video, a speech-like waveform and lagged,
noisy gold-standard ratings. All knobs live in :class:`SyntheticConfig`.

Generative model, one module per part (each module's docstring describes its part):

* ``signals``: the latent emotion (a smooth Ornstein-Uhlenbeck process with occasional slow events,
  valence and arousal correlated; or real RECOLA ratings with ``ratings_from``), the annotation
  (annotator lag plus smooth noise) and the face-absent spans.
* ``face``: the video, the astronaut photo on a per-video background, with expression warps (valence
  strong, arousal partial: see Calibration), jaw opening with the speech envelope, head motion, lighting and sensor noise.
* ``speech``: the audio, source-filter speech whose loudness, pitch and syllable rate follow arousal,
  so that audio carries arousal far better than the face does (the privileged modality).
* ``physio``: the ECG and EDA (RECOLA layout, ``SyntheticConfig.physio``, on by default): heart rate
  follows arousal about 2 s late, skin conductance responses come more often and larger with arousal,
  built on neurokit2's ECG beat and noise models. Its own random stream leaves the rest unchanged.
* ``subject``: one person, every random part of a recording drawn together.

Calibration (issue 31): the face's arousal cues (``eye_arousal_gain``, ``brow_arousal_gain``) are set so
that, in the paper's regime (pretrained trunks, nearly frozen; ``configs/demo.py``), the converged teacher
leads the visual-only baseline on dev by about 0.1 CCC on arousal and less on valence, as the paper's
RECOLA teacher leads its visual model by 0.13. The lead is steep in these gains. Measured on dev (9 train / 9
dev recordings, 8 seeds, 1,500 steps, mean over seeds, teacher - baseline, valence / arousal): 0.015 / 0.02
(before) +0.03 / +0.19; 0.019 / 0.024 (now) +0.01 / +0.09; 0.0225 / 0.0275 +0.03 / +0.02; with 6 train / 3
dev recordings, 0.04 / 0.04 gave +0.01 / +0.01 (the face gives arousal away). The voice is unchanged;
nothing was tuned on a student's result or on the test split.

Files: ``formats`` (mp4, latent CSV, RECOLA ratings), ``recola_layout`` (``generate_corpus``, the
``train``/``dev``/``test`` splits), ``affwild2_layout`` (``generate_affwild2_corpus``), ``jobs`` (the
process pool), ``config`` (the configuration and record types).

Randomness is derived from ``(seed, video_id)`` via ``numpy.random.SeedSequence``, so a recording
does not depend on which other recordings are generated or on the number of workers.

CLI::

  python -m pkd_jax.data.synthetic --out=DIR --train=9 --dev=9 --test=3 --seconds=60 --seed=0
  python -m pkd_jax.data.synthetic --out=DIR --layout=affwild2 ...   # Aff-Wild2 layout instead
"""

from pkd_jax.data.synthetic.affwild2_layout import (
    AFFWILD2_FOLDERS,
    generate_affwild2_corpus,
    generate_affwild2_recording,
)
from pkd_jax.data.synthetic.config import (
    DIMENSIONS,
    LATENT_HEADER,
    AbsentSpan,
    Appearance,
    SyntheticConfig,
    Voice,
)
from pkd_jax.data.synthetic.face import astronaut_rgba, sample_appearance
from pkd_jax.data.synthetic.formats import (
    load_ratings,
    read_latent_csv,
    write_latent_csv,
    write_recording,
    write_video,
)
from pkd_jax.data.synthetic.physio import Physio, synthesize_physio, write_physio_csv
from pkd_jax.data.synthetic.recola_layout import generate_corpus, generate_video
from pkd_jax.data.synthetic.signals import (
    annotate,
    burn_in,
    sample_absent_spans,
    sample_emotion,
    smooth_noise,
    video_rngs,
)
from pkd_jax.data.synthetic.speech import sample_voice, synthesize_audio

__all__ = [
    "AFFWILD2_FOLDERS",
    "DIMENSIONS",
    "LATENT_HEADER",
    "AbsentSpan",
    "Appearance",
    "Physio",
    "SyntheticConfig",
    "Voice",
    "annotate",
    "astronaut_rgba",
    "burn_in",
    "generate_affwild2_corpus",
    "generate_affwild2_recording",
    "generate_corpus",
    "generate_video",
    "load_ratings",
    "read_latent_csv",
    "sample_absent_spans",
    "sample_appearance",
    "sample_emotion",
    "sample_voice",
    "smooth_noise",
    "synthesize_audio",
    "synthesize_physio",
    "video_rngs",
    "write_latent_csv",
    "write_physio_csv",
    "write_recording",
    "write_video",
]
