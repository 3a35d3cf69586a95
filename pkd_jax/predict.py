"""Predict valence and arousal on new videos with a trained student (or a teacher, given audio).

    python -m pkd_jax.predict --workdir=runs/student --video=a.mp4 --video=b.mp4 --out=predictions
    python -m pkd_jax.predict --checkpoint=runs/student/checkpoints/2000 --video=a.mp4 b.mp4 --out=DIR
    python -m pkd_jax.predict --workdir=runs/teacher --video=a.mp4 --audio=a.wav --out=DIR

Each video is decoded at the cache's frame rate and its faces are detected and cropped by the same code
and settings as preprocessing (`pkd_jax.data.video`, `pkd_jax.data.faces`, the settings read from the
training cache's manifest). Frames without a face follow the missing-face policy the model was trained
with (`config.data.missing_face`). The network runs in chunks of frames carrying the recurrent state
from chunk to chunk, so a video of any length is one continuous sequence in bounded memory: only one
chunk of face crops and the per-frame predictions are held.

Writes `<out>/<video>.csv` (frame, time_s, one column per target, face_found), `<out>/<video>.png`
(both curves over time, face-absent spans shaded) and `<out>/summary.json`, and prints a summary table.
A video that cannot be read, or in which no face is ever found, is reported with its file and reason;
the other videos still finish, and the exit status is 1 when any video failed.

Students need no audio: this module imports no audio library unless a teacher is loaded. Teachers take
the audio of each video's container, or the files named by `--audio` (one per video, in order), and
normalise it with the training cache's statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from pkd_jax.data.cache import TARGETS, Cache, CachedVideo, CacheError
from pkd_jax.data.faces import FaceCropper, create_detector
from pkd_jax.data.pipeline import MISSING_FACE_POLICIES, FrameReader, PipelineConfig
from pkd_jax.data.video import VideoError, VideoReader, probe_video
from pkd_jax.models import Student, Teacher
from pkd_jax.train import build
from pkd_jax.train.steps import make_stream_step

_LOG = logging.getLogger(__name__)

# Face-detection fields of the cache manifest's preprocessing config (`PreprocessConfig`).
FACE_FIELDS = (
    "fps",
    "face_size",
    "detector",
    "face_margin",
    "detect_width",
    "min_face_fraction",
    "redetect_every",
)


class PredictError(ValueError):
    """A video that cannot be predicted (unreadable, no face at all, bad audio); names the file."""


@dataclasses.dataclass
class Trained:
    """A trained network ready for inference.

    Attributes:
      config: The training config (the workdir's config.json).
      model: The Student or Teacher it builds.
      variables: `{"params", "batch_stats"}` as numpy arrays.
      step: The checkpoint's step.
      source: The checkpoint directory.
    """

    config: ml_collections.ConfigDict
    model: Student | Teacher
    variables: dict[str, Any]
    step: int
    source: Path

    @property
    def is_teacher(self) -> bool:
        return isinstance(self.model, Teacher)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(TARGETS[i] for i in build.target_indices(self.config))


# ---------------------------------------------------------------------------------------------------------
# The trained model


def _locate(workdir: str | Path | None, checkpoint: str | Path | None) -> tuple[Path, int | None]:
    """(workdir, step or None for the best) from exactly one of the two."""
    if bool(workdir) == bool(checkpoint):
        raise ValueError("give exactly one of --workdir (its best checkpoint) or --checkpoint (one step)")
    if workdir:
        return Path(workdir), None
    path = Path(checkpoint)
    if not path.name.isdigit() or path.parent.name != "checkpoints":
        raise ValueError(
            f"{path}: a checkpoint is <workdir>/checkpoints/<step>, e.g. runs/student/checkpoints/2000"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path.parent.parent, int(path.name)


def read_config(path: Path) -> ml_collections.ConfigDict:
    """A workdir's config.json, with fields added to pkd_jax since it was written at their defaults.

    The defaults come from `configs.common` when it is importable (a source checkout); new fields
    default to the behaviour that existed before them, so older workdirs keep working.
    """
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(saved, dict) or "stage" not in saved or "data" not in saved:
        raise ValueError(f"{path}: not a pkd_jax training config (no stage or data fields)")
    try:
        from configs import common

        defaults = common.get_config(saved["stage"], saved["data"].get("dataset", "recola")).to_dict()
    except (ImportError, AttributeError):  # no configs folder (an installed package): saved fields only
        defaults = {}
    return ml_collections.ConfigDict(_fill(defaults, saved))


def _fill(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _fill(defaults[key], value) if both else value
    return out


def load_trained(workdir: str | Path | None = None, checkpoint: str | Path | None = None) -> Trained:
    """The network of a training workdir: its config.json and the best (or the named) checkpoint.

    Only the parameters and BatchNorm statistics are read (not the optimizer state), as numpy arrays,
    and every shape is checked against the architecture that config.json builds.

    Args:
      workdir: A training workdir; its best checkpoint by dev CCC (or latest without scores) is used.
      checkpoint: Or one checkpoint directory, `<workdir>/checkpoints/<step>`.

    Raises:
      FileNotFoundError, ValueError: naming the file, for a missing or mismatched workdir or checkpoint.
    """
    import orbax.checkpoint as ocp

    from pkd_jax.train.checkpoint import Checkpointer, check_tree_shapes

    root, step = _locate(workdir, checkpoint)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: {root} is not a pkd_jax training workdir")
    config = read_config(config_path)
    if config.data.get("window_subsequences", 0) > 0:
        raise ValueError(
            f"{config_path}: a windowed (strong-setting) model; predict runs per-frame (weak-setting) models"
        )
    model = build.build_model(config)
    checkpoints = root / "checkpoints"
    if step is None:
        if not checkpoints.is_dir():
            raise FileNotFoundError(f"no checkpoints in {root} ({checkpoints} does not exist)")
        manager = Checkpointer(checkpoints, async_save=False)
        step = manager.best_step()
        manager.close()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoints}")
    state_dir = checkpoints / str(step) / "state"
    teacher = isinstance(model, Teacher)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *build.example_inputs(config, teacher=teacher))
    )
    abstract = {k: abstract[k] for k in ("params", "batch_stats")}
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
    try:
        with ocp.PyTreeCheckpointer() as reader:
            args = ocp.args.PyTreeRestore(item=abstract, restore_args=as_numpy, partial_restore=True)
            variables = reader.restore(state_dir.absolute(), args=args)
    except Exception as e:  # orbax raises several kinds for a missing or foreign checkpoint
        raise ValueError(f"cannot read parameters from checkpoint {state_dir}: {e}") from e
    check_tree_shapes(
        abstract, variables, f"checkpoint {state_dir}", f"the {config.stage} model of {config_path}"
    )
    return Trained(config, model, variables, int(step), state_dir.parent)


# ---------------------------------------------------------------------------------------------------------
# Preprocessing settings


def training_cache_dir(config: ml_collections.ConfigDict) -> Path | None:
    """Where the training config's feature cache is (`data.cache`, else `<data.root>/pkd_jax_cache`)."""
    if not (config.data.cache or config.data.root):
        return None
    return Path(config.data.cache or Path(config.data.root) / "pkd_jax_cache")


def preprocess_settings(
    config: ml_collections.ConfigDict, cache_dir: str | Path | None = None
) -> tuple[dict[str, Any], Cache | None]:
    """The preprocessing configuration the model was trained on, and the training cache it comes from.

    The settings are the training cache manifest's `config` (`cache_dir`, else the cache config.json
    names). Without that cache (a model copied elsewhere), preprocessing's defaults with the config's
    face size are used, with a warning, and the cache is None; that fallback imports the preprocessing
    module (and its audio libraries).

    Raises:
      CacheError: naming the manifest, when `cache_dir` has none, or its settings do not fit the model.
    """
    directory = Path(cache_dir) if cache_dir else training_cache_dir(config)
    if cache_dir or (directory is not None and (directory / "manifest.json").is_file()):
        cache = Cache(directory)  # validates the manifest, naming it
        settings = dict(cache.config)
        manifest = directory / "manifest.json"
        missing = [f for f in FACE_FIELDS if f not in settings]
        if missing:
            raise CacheError(f"{manifest}: its preprocessing config lacks {missing}")
        if settings["face_size"] != config.data.face_size:
            raise CacheError(
                f"{manifest}: faces of {settings['face_size']} px, the model takes {config.data.face_size} px"
            )
        return settings, cache
    from pkd_jax.data.preprocess import PreprocessConfig

    _LOG.warning(
        "No training cache (%s): detecting faces with preprocessing's default settings (face size %d); "
        "pass --cache=DIR to use the training cache's exact settings.",
        f"no manifest.json in {directory}" if directory else "the config names none",
        config.data.face_size,
    )
    return PreprocessConfig(face_size=config.data.face_size).to_dict(), None


def make_cropper(settings: dict[str, Any]) -> FaceCropper:
    """The face cropper preprocessing builds from the same settings."""
    detector = create_detector(
        settings["detector"],
        detect_width=settings["detect_width"],
        min_face_fraction=settings["min_face_fraction"],
        redetect_every=settings["redetect_every"],
    )
    return FaceCropper(detector, settings["face_size"], settings["face_margin"])


# ---------------------------------------------------------------------------------------------------------
# Frames and audio


def face_chunks(
    path: str | Path, cropper: FaceCropper, *, fps: float, chunk_frames: int, missing_face: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(crops uint8 [n, S, S, 3], found bool [n]) of consecutive frames, n = chunk_frames except last.

    The missing-face policy is applied as the training pipeline applies it to the cache: "retain"
    repeats the last detected face (black before the first one), "black" leaves black crops; the last
    face carries over chunk boundaries.

    Raises:
      VideoError: naming the file, when it cannot be opened or decoded.
    """
    if missing_face not in MISSING_FACE_POLICIES:
        raise ValueError(f"missing_face={missing_face!r}; choose one of {list(MISSING_FACE_POLICIES)}")
    cropper.reset()
    size = cropper.size
    crops = np.zeros((chunk_frames, size, size, 3), np.uint8)
    found = np.zeros(chunk_frames, bool)
    last_face: np.ndarray | None = None
    n = 0
    for frame in VideoReader(path, fps):
        crop, ok = cropper(frame)
        if ok:
            last_face = crop
        elif missing_face == "retain" and last_face is not None:
            crop = last_face
        crops[n], found[n] = crop, ok
        n += 1
        if n == chunk_frames:
            yield crops.copy(), found.copy()
            n = 0
    if n:
        yield crops[:n].copy(), found[:n].copy()


class AudioWindows:
    """Per-frame log-mel windows of one recording, exactly as the training pipeline cuts them.

    The waveform comes from `audio_path` (any libsndfile format) or from the video's container; it is
    turned into the cache's log-mel spectrogram with the training cache's settings and z-scored with its
    training statistics. Frames past the end of the audio get the training mean (zeros), as in training.
    """

    def __init__(self, video: Path, audio_path: Path | None, cache: Cache, window_s: float):
        from pkd_jax.data import audio

        settings = cache.config
        rate, fps = settings["sample_rate"], settings["fps"]
        samples = audio.load_wav(audio_path, rate) if audio_path else audio.load_container_audio(video, rate)
        per_frame = rate // fps
        samples = audio.fit_length(samples, -(-len(samples) // per_frame) * per_frame)
        logmel = audio.log_mel(
            samples, sample_rate=rate, n_fft=settings["n_fft"], hop=settings["hop"], n_mels=settings["n_mels"],
            fmin=settings["fmin"], fmax=settings["fmax"], log_floor=settings["log_floor"],
        )  # fmt: skip
        if not np.isfinite(logmel).all():
            raise PredictError(f"{audio_path or video}: non-finite log-mel spectrogram")
        empty = np.zeros(0)
        self._video = CachedVideo(video.stem, "predict", empty, empty, logmel, empty, empty)
        self._reader = FrameReader(cache, PipelineConfig(with_audio=True, audio_window_s=window_s))

    def __call__(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), n_mels, W, 1] windows centred on frames `index`."""
        return self._reader.audio(self._video, index)


# ---------------------------------------------------------------------------------------------------------
# Prediction


@dataclasses.dataclass
class VideoPrediction:
    """Per-frame results of one video."""

    path: Path
    fps: float
    pred: np.ndarray  # float32 [T, targets]
    face_found: np.ndarray  # bool [T]
    targets: tuple[str, ...]
    seconds: float  # wall time, decoding included, compilation excluded

    @property
    def num_frames(self) -> int:
        return len(self.face_found)


class Predictor:
    """Runs a trained network over videos, chunk by chunk, with one compiled step for all chunks.

    Args:
      trained: The network (see `load_trained`).
      chunk_frames: Frames per step; None uses the training config's `data.eval_chunk_frames`.
      cache_dir: The training feature cache (face settings, and audio statistics for a teacher); None
        uses the one the training config names.
    """

    def __init__(
        self, trained: Trained, *, chunk_frames: int | None = None, cache_dir: str | Path | None = None
    ):
        config = trained.config
        self.trained = trained
        self.chunk_frames = int(chunk_frames or config.data.eval_chunk_frames)
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames={self.chunk_frames} must be positive")
        self.settings, self.cache = preprocess_settings(config, cache_dir)
        self.cropper = make_cropper(self.settings)
        if trained.is_teacher:
            if self.cache is None:
                raise CacheError(
                    "a teacher needs the training split's audio statistics from its feature cache "
                    f"({training_cache_dir(config) or 'the config names none'}); pass --cache=DIR"
                )
            self.cache.audio_stats()  # fails now, naming the manifest, rather than on the first video
        self.variables = jax.device_put(trained.variables)
        self._step = jax.jit(make_stream_step(trained.model, build.compute_dtype(config)))
        self._compiled: Any = None  # compiled on the first chunk; every chunk has the same shapes
        self.compile_seconds = 0.0

    def predict(
        self,
        path: str | Path,
        *,
        audio: str | Path | None = None,
        on_frames: Callable[[int], None] | None = None,
    ) -> VideoPrediction:
        """Predictions for every frame of the video at `path`.

        Args:
          path: The video file.
          audio: Teachers only: an audio file to use instead of the container's audio track.
          on_frames: Called with the number of frames after each chunk (progress).

        Raises:
          VideoError, PredictError: naming the file, for an unreadable video or audio, or a video in which
            no face is ever found.
        """
        path = Path(path)
        start, compiling = time.perf_counter(), 0.0
        model, fps = self.trained.model, float(self.settings["fps"])
        windows = None
        if self.trained.is_teacher:
            from pkd_jax.data.audio import AudioError

            try:
                windows = AudioWindows(
                    path, Path(audio) if audio else None, self.cache, self.trained.config.data.audio_window_s
                )
            except AudioError as e:
                raise PredictError(str(e)) from e
        elif audio:
            raise ValueError(f"{path}: audio given, but the {self.trained.config.stage} model takes no audio")
        carry = model.zero_carry(1)
        preds: list[np.ndarray] = []
        found: list[np.ndarray] = []
        pending: tuple[jax.Array, int] | None = None
        done = 0
        chunks = face_chunks(
            path, self.cropper, fps=fps, chunk_frames=self.chunk_frames,
            missing_face=self.trained.config.data.missing_face,
        )  # fmt: skip
        for crops, ok in chunks:
            n = len(ok)
            # The last chunk is padded to the full length: one compiled program for every chunk. Padding
            # comes after the real frames, so it cannot change their (causal) predictions.
            batch = {"frames": _pad(crops, self.chunk_frames)[None]}
            if windows is not None:
                batch["audio"] = _pad(windows(np.arange(done, done + n)), self.chunk_frames)[None]
            if self._compiled is None:
                tick = time.perf_counter()
                self._compiled = self._step.lower(self.variables, batch, carry).compile()
                compiling = self.compile_seconds = time.perf_counter() - tick
            pred, _, carry = self._compiled(self.variables, batch, carry)  # dispatched asynchronously
            if pending is not None:  # the previous chunk's results, fetched while this one computes
                preds.append(np.asarray(pending[0])[0, : pending[1]])
            pending = (pred, n)
            found.append(ok)
            done += n
            if on_frames:
                on_frames(n)
        if pending is not None:
            preds.append(np.asarray(pending[0])[0, : pending[1]])
        face_found = np.concatenate(found) if found else np.zeros(0, bool)
        if not face_found.any():
            raise PredictError(f"{path}: no face found in any of its {len(face_found)} frames")
        seconds = time.perf_counter() - start - compiling
        return VideoPrediction(path, fps, np.concatenate(preds), face_found, self.trained.targets, seconds)


def _pad(array: np.ndarray, length: int) -> np.ndarray:
    if len(array) == length:
        return array
    return np.concatenate([array, np.zeros((length - len(array), *array.shape[1:]), array.dtype)])


# ---------------------------------------------------------------------------------------------------------
# Outputs


def write_csv(path: str | Path, result: VideoPrediction) -> None:
    """`frame, time_s, <targets>, face_found`, one row per frame."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_s", *result.targets, "face_found"])
        for t in range(result.num_frames):
            values = [f"{x:.5f}" for x in result.pred[t]]
            writer.writerow([t, f"{t / result.fps:.3f}", *values, int(result.face_found[t])])


def absent_spans(face_found: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame ranges where no face was found."""
    missing = np.concatenate([[False], ~np.asarray(face_found, bool), [False]])
    edges = np.flatnonzero(np.diff(missing.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plot(path: str | Path, result: VideoPrediction) -> None:
    """A PNG of every target over time, with the face-absent spans shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    time_s = np.arange(result.num_frames) / result.fps
    fig, ax = plt.subplots(figsize=(12, 3.5), dpi=100)
    for i, name in enumerate(result.targets):
        ax.plot(time_s, result.pred[:, i], lw=1.0, label=name)
    for k, (a, b) in enumerate(absent_spans(result.face_found)):
        ax.axvspan(a / result.fps, b / result.fps, color="0.8", lw=0, label="no face" if k == 0 else None)
    ax.set_xlim(0, max(time_s[-1], 1.0 / result.fps))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("prediction")
    ax.set_title(result.path.name)
    ax.legend(loc="upper right", ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def output_names(videos: Sequence[Path]) -> list[str]:
    """File stems for the outputs, made unique when two videos share a name."""
    names, seen = [], {}
    for video in videos:
        stem = video.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The human-readable end-of-run table (one line per video, failures with their reason)."""
    lines = [
        f"{'video':<28} {'frames':>7} {'seconds':>8} {'face %':>7} {'mean pred':>20} {'frames/s':>9}  status"
    ]
    for row in rows:
        if row["ok"]:
            means = " ".join(f"{k[:3]} {v:+.3f}" for k, v in row["mean"].items())
            lines.append(
                f"{row['name']:<28} {row['frames']:>7} {row['duration_s']:>8.1f} {100 * row['face_found']:>6.1f}% "
                f"{means:>20} {row['frames_per_s']:>9.1f}  ok"
            )
        else:
            lines.append(
                f"{row['name']:<28} {'':>7} {'':>8} {'':>7} {'':>20} {'':>9}  FAILED: {row['error']}"
            )
    failed = sum(not r["ok"] for r in rows)
    lines.append(
        f"{len(rows) - failed} of {len(rows)} videos predicted" + (f", {failed} failed" if failed else "")
    )
    return "\n".join(lines)


def predict_files(
    predictor: Predictor,
    videos: Sequence[str | Path],
    out: str | Path,
    *,
    audio: Sequence[str | Path] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predicts every video, writing its CSV and PNG into `out`; never raises for a bad video.

    Returns one summary row per video (also written to `<out>/summary.json`): `ok`, and the file,
    frame count, face-found fraction, mean prediction and speed, or the `error`.
    """
    videos = [Path(v) for v in videos]
    if audio and not predictor.trained.is_teacher:
        raise ValueError(f"audio files given, but the {predictor.trained.config.stage} model takes no audio")
    if audio and len(audio) != len(videos):
        raise ValueError(f"{len(audio)} audio files for {len(videos)} videos; give one per video, in order")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = float(predictor.settings["fps"])
    estimates = []
    for video in videos:
        try:
            info = probe_video(video)
            estimates.append(info.num_frames * fps / info.fps)  # the header's count, resampled
        except VideoError:
            estimates.append(0)  # reported when the video is read
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=round(sum(estimates)), unit="frame", disable=not progress, desc="predict")
    with bar:
        for k, (video, name) in enumerate(zip(videos, output_names(videos), strict=True)):
            bar.set_postfix_str(f"video {k + 1}/{len(videos)} {video.name}")
            row: dict[str, Any] = {"video": str(video), "name": name}
            try:
                result = predictor.predict(video, audio=audio[k] if audio else None, on_frames=bar.update)
                write_csv(out / f"{name}.csv", result)
                plot(out / f"{name}.png", result)
            except (VideoError, PredictError, ValueError, OSError) as e:
                message = str(e) if str(video) in str(e) else f"{video}: {e}"
                tqdm.write(f"failed: {message}")
                rows.append(row | {"ok": False, "error": message})
                continue
            row |= {
                "ok": True,
                "frames": result.num_frames,
                "duration_s": result.num_frames / result.fps,
                "face_found": float(result.face_found.mean()),
                "mean": {t: float(result.pred[:, i].mean()) for i, t in enumerate(result.targets)},
                "frames_per_s": result.num_frames / result.seconds,
                "csv": str(out / f"{name}.csv"),
                "png": str(out / f"{name}.png"),
            }
            rows.append(row)
    summary = {
        "model": str(predictor.trained.source),
        "stage": predictor.trained.config.stage,
        "face_settings": str(predictor.cache.root / "manifest.json") if predictor.cache else "defaults",
        "chunk_frames": predictor.chunk_frames,
        "compile_s": predictor.compile_seconds,
        "videos": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return rows


# ---------------------------------------------------------------------------------------------------------
# CLI


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training workdir; its best checkpoint is used.")
    flags.DEFINE_string("checkpoint", None, "Or one checkpoint directory, <workdir>/checkpoints/<step>.")
    flags.DEFINE_multi_string("video", [], "Video file(s); more may follow as plain arguments.")
    flags.DEFINE_string("out", None, "Output directory for the CSVs, plots and summary.json.", required=True)
    flags.DEFINE_multi_string(
        "audio",
        [],
        "Teachers only: one audio file per video, in order (default: each video's own audio track).",
    )
    flags.DEFINE_integer(
        "chunk_frames", None, "Frames per inference step (default: the config's data.eval_chunk_frames)."
    )
    flags.DEFINE_string("cache", None, "The training feature cache (default: the one config.json names).")


def main(argv: Sequence[str]) -> int:
    """CLI entry point; returns the exit status (0 when every video was predicted)."""
    from absl import flags

    f = flags.FLAGS
    videos = [*f.video, *argv[1:]]
    if not videos:
        raise SystemExit("no video given: --video=FILE [FILE ...]")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it opens at INFO
    try:
        trained = load_trained(f.workdir, f.checkpoint)
        print(
            f"{trained.config.stage} model from {trained.source} (step {trained.step}), targets {trained.targets}"
        )
        predictor = Predictor(trained, chunk_frames=f.chunk_frames, cache_dir=f.cache)
        rows = predict_files(predictor, videos, f.out, audio=f.audio or None)
    except (ValueError, OSError) as e:  # a bad model, cache or argument: nothing to predict with
        raise SystemExit(f"error: {e}") from e
    print(summary_table(rows))
    print(f"outputs in {f.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
