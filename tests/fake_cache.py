"""A small feature cache written directly (no video decoding), for fast training tests.

Faces are noise images whose brightness follows valence, and the log-mel energy follows arousal, so a
model can learn something in a few steps. With `physio`, each video also has physiological features
(heart rate following arousal half a second late, HRV, skin conductance level and responses).
"""

from pathlib import Path

import numpy as np

from pkd_jax.data.cache import CacheWriter, VideoRecord


def write_fake_cache(
    root: Path, *, n_train=3, n_dev=2, frames=60, size=32, n_mels=8, seed=0, physio=False
) -> Path:
    rng = np.random.default_rng(seed)
    config = {
        "audio": {"sample_rate": 16000, "hop": 160, "n_mels": n_mels},
        "fps": 25,
        "face_size": size,
        "detector": "haar",
        "physio": "yes" if physio else "no",
    }
    writer = CacheWriter(root, dataset="fake", config=config)
    ids = [(f"train_{i + 1}", "train") for i in range(n_train)] + [
        (f"dev_{i + 1}", "dev") for i in range(n_dev)
    ]
    for video_id, split in ids:
        t = np.arange(frames) / 25
        valence = np.sin(2 * np.pi * t / rng.uniform(1.5, 3.0) + rng.uniform(0, 6)).astype(np.float32)
        arousal = np.cos(2 * np.pi * t / rng.uniform(1.5, 3.0) + rng.uniform(0, 6)).astype(np.float32)
        base = rng.integers(0, 60, (frames, size, size, 3))
        faces = np.clip(base + (valence[:, None, None, None] + 1) * 90, 0, 255).astype(np.uint8)
        found = rng.random(frames) > 0.05
        faces[~found] = 0
        mel = rng.normal(0, 0.3, (4 * frames, n_mels)) + np.repeat(arousal, 4)[:, None]
        arrays = {
            "frames": faces,
            "face_found": found,
            "logmel": mel.astype(np.float16),
            "labels": np.stack([valence, arousal], axis=1),
            "label_mask": np.ones(frames, bool),
        }
        if physio:  # from a stream of its own: the other arrays are those of a cache without physio
            physio_rng = np.random.default_rng([seed, len(video_id), ord(video_id[-1])])
            late = np.concatenate([np.full(12, arousal[0]), arousal[:-12]])
            noise = physio_rng.normal(0, 0.2, (frames, 4))
            drift = 5 + 0.1 * np.cumsum(physio_rng.normal(0, 0.01, frames))
            columns = [70 + 10 * late, 40 - 5 * late, drift, late]
            arrays["physio"] = (np.stack(columns, axis=1) + noise).astype(np.float32)
        writer.write_video(VideoRecord(video_id, split, "ok", num_frames=frames), arrays)
    writer.finalize(ids)
    return Path(root)
