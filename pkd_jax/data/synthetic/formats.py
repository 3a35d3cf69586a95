"""Files: mp4 encoding (video only, or video with an AAC audio track), the latent CSV, and the
RECOLA gold-standard ratings that ``ratings_from`` turns into latent trajectories.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pkd_jax.data import recola_format
from pkd_jax.data.synthetic.config import DIMENSIONS, LATENT_HEADER, SyntheticConfig

_LOG = logging.getLogger(__name__)


def _pick_codec(name: str) -> str:
    """Resolves ``"auto"`` to the first usable encoder of PyAV's bundled ffmpeg."""
    candidates = ("libx264", "mpeg4") if name == "auto" else (name,)
    for candidate in candidates:
        try:
            av.Codec(candidate, "w")
        except Exception:  # PyAV raises different error types across versions.
            continue
        return candidate
    raise RuntimeError(f"no usable video encoder among {candidates}")


def _add_video_stream(container: av.container.OutputContainer, codec: str, fps: int) -> av.VideoStream:
    stream = container.add_stream(codec, rate=Fraction(fps))
    if not isinstance(stream, av.VideoStream):
        raise ValueError(f"video_codec {codec!r} is not a video encoder")
    return stream


def write_video(path: Path, frames: Iterator[np.ndarray], config: SyntheticConfig) -> str:
    """Encodes RGB uint8 frames to an mp4 at ``config.fps`` (yuv420p); returns the codec used."""
    codec = _pick_codec(config.video_codec)
    with av.open(str(path), mode="w") as container:
        stream = _add_video_stream(container, codec, config.fps)
        stream.width, stream.height = config.frame_width, config.frame_height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = config.video_threads
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": str(config.video_crf)}
        else:
            stream.bit_rate = 40 * config.frame_width * config.frame_height
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return codec


def write_recording(
    path: Path, frames: Iterator[np.ndarray], wave: np.ndarray, config: SyntheticConfig
) -> str:
    """Encodes RGB frames (any even size) and a mono waveform into one mp4 (video + AAC audio)."""
    codec = _pick_codec(config.video_codec)
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), mode="w") as container:
        stream = _add_video_stream(container, codec, config.fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = config.video_threads
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": str(config.video_crf)}
        else:
            stream.bit_rate = 40 * first.shape[0] * first.shape[1]
        audio = container.add_stream("aac", rate=config.sample_rate)
        audio.layout = "mono"
        for i, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        block = 1024
        for start in range(0, len(wave), block):
            chunk = np.asarray(wave[start : start + block], np.float32)[None, :]
            audio_frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            audio_frame.sample_rate = config.sample_rate
            audio_frame.pts = start
            container.mux(audio.encode(audio_frame))
        container.mux(audio.encode(None))
    return codec


def write_latent_csv(
    path: Path, valence: np.ndarray, arousal: np.ndarray, face_visible: np.ndarray, fps: int
) -> None:
    """Writes ``frame,time_s,valence,arousal,face_visible`` rows, one per frame."""
    rows = [LATENT_HEADER]
    rows += [
        f"{i},{i / fps:.2f},{v:.6f},{a:.6f},{int(f)}"
        for i, (v, a, f) in enumerate(zip(valence, arousal, face_visible, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def read_latent_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a latent CSV into arrays keyed by column name."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        header = f.readline().strip()
    if header != LATENT_HEADER:
        raise ValueError(f"{path}: expected header {LATENT_HEADER!r}, got {header!r}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    cols = dict(zip(LATENT_HEADER.split(","), table.T, strict=True))
    cols["frame"] = cols["frame"].astype(np.int64)
    cols["face_visible"] = cols["face_visible"].astype(bool)
    return cols


def _natural_key(name: str) -> tuple[str, int, str]:
    """Sorts ``train_2`` before ``train_10``."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2)), "") if m else (name, -1, name)


def load_ratings(ratings_dir: str | Path, fps: int = 25) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads RECOLA gold-standard ratings in either circulating form.

    Args:
      ratings_dir: A RECOLA root (containing ``ratings_gold_standard/``) or that folder itself.
        ARFF files are looked up under ``{arousal,valence}/<id>.arff``, CSV files as ``<id>.csv``.
      fps: Expected rating rate; ARFF frame times must step by ``1 / fps``.

    Returns:
      ``{id: (valence, arousal)}`` in natural id order.

    Raises:
      FileNotFoundError: if no rating file is found.
      ValueError: naming the file, for unreadable or inconsistent files.
    """
    root = Path(ratings_dir)
    gold = root / "ratings_gold_standard" if (root / "ratings_gold_standard").is_dir() else root
    arff = {d: {p.stem: p for p in (gold / d).glob("*.arff")} for d in DIMENSIONS}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for vid in sorted(arff["arousal"].keys() | arff["valence"].keys(), key=_natural_key):
        series = {}
        for dim in DIMENSIONS:
            if vid not in arff[dim]:
                raise ValueError(f"{gold / dim / (vid + '.arff')}: missing ({dim} rating of {vid})")
            times, values = recola_format.read_arff_gold(arff[dim][vid])
            if len(times) > 1 and not np.allclose(np.diff(times), 1.0 / fps, atol=0.006):
                raise ValueError(f"{arff[dim][vid]}: frame times do not step by 1/{fps} s")
            series[dim] = values
        if len(series["arousal"]) != len(series["valence"]):
            raise ValueError(
                f"{arff['arousal'][vid]} and {arff['valence'][vid]} differ in length "
                f"({len(series['arousal'])} vs {len(series['valence'])})"
            )
        out[vid] = (series["valence"], series["arousal"])
    for path in sorted(gold.glob("*.csv"), key=lambda p: _natural_key(p.stem)):
        table = recola_format.read_csv_gold(path)
        if path.stem in out:
            _LOG.warning("%s: %s already read from ARFF files; using the ARFF form", path, path.stem)
            continue
        out[path.stem] = (table[:, 1], table[:, 0])
    if not out:
        raise FileNotFoundError(f"no rating files under {gold} ({{arousal,valence}}/*.arff or *.csv)")
    return dict(sorted(out.items(), key=lambda kv: _natural_key(kv[0])))
