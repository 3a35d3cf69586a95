"""Writes a synthetic audio-visual emotion corpus, in the RECOLA (AVEC 2016) layout or the Aff-Wild2 layout.

  python -m pkd_jax.data.synthetic --out=DIR --train=9 --dev=9 --test=3 --seconds=60 --seed=0
  python -m pkd_jax.data.synthetic --out=DIR --layout=affwild2 ...   # Aff-Wild2 layout instead

Each recording is a face video, a speech-like waveform and lagged, noisy gold-standard ratings, all
rendered from two latent emotion trajectories (valence, arousal); a recording depends only on
``(seed, id)``. RECOLA layout: ``train_k``, ``dev_k`` and (``--test``) held-out ``test_k`` recordings
with ratings; ``--ratings_from`` takes the latent trajectories (ids and lengths) from real RECOLA
rating files; ``recordings_physio/`` holds each recording's ECG and EDA, driven by its arousal
(``--nophysio`` leaves them out). Aff-Wild2 layout: face crops, ``-5``-marked label files and videos with
audio; the last training recording holds two people. The generative model: ``pkd_jax.data.synthetic``.
"""

from absl import app, flags

from pkd_jax.data.synthetic import cli

if __name__ == "__main__":
    cli.define_flags()
    flags.adopt_module_key_flags(cli)  # so that --help lists them, as flags of this entry point
    app.run(cli.main)
