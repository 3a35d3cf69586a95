"""Input pipeline: clips and evaluation chunks from the feature cache, as numpy batch dicts.

Training (`train_dataset`): a grain dataset of clips of `clip_frames` consecutive frames. Clip k of the
stream draws its position uniformly over every valid clip start of every training video, from a
random generator seeded by (seed, k) (augmentation too): deterministic for a seed, sharded by process
(each takes its block of every global batch), its iterator state checkpointed with the model.

Evaluation (`eval_batches`): every frame of every video exactly once, in order, in chunks of
`chunk_frames`; up to `videos_per_batch` videos run side by side as lanes, the ragged ends padded and
masked by `frame_mask`. `first_chunk` tells the evaluator to reset the recurrent carry.

Windows (strong setting, `subsequences` > 0): an element is a window of `subsequences` (L)
consecutive sub-sequences of `subsequence_frames` (S) frames; from each sub-sequence `clip_frames` (C)
frames are taken at a fixed stride ending on its last frame (S=32, C=8: frames 3, 7, ..., 31), and
the sub-sequence's label is its last frame's (docs/method.md, Strong setting). Training windows start
uniformly at random over every video (videos shorter than a window are padded with masked sub-sequences);
evaluation windows (`eval_windows`) tile every video from frame 0. Window batches hold, per time step,
a clip and one audio window centred on the sub-sequence:
    frames       uint8 [B, L, C, S, S, 3]
    audio        float32 [B, L, n_mels, W, 1]
    physio       float32 [B, L, Wp, F]  physiological features centred on each sub-sequence (`with_physio`)
    labels       float32 [B, L, 2]  the label of each sub-sequence's last frame
    label_mask   float32 [B, L]  1 where that label is valid (Aff-Wild2's -5 is invalid) and real
    frame_mask   float32 [B, L]  1 for a real sub-sequence, 0 for padding past the video's end
    face_found   float32 [B, L]  of the last frame
    frame_index  int32 [B, L]  the last frame's index
    window_start int32 [B], video_id str [B]

Batch keys (B clips or lanes, T frames):
    frames       uint8 [B, T, S, S, 3]  face crops, missing-face policy applied
    audio        float32 [B, T, n_mels, W, 1]  z-scored log-mel window per frame (when `with_audio`)
    physio       float32 [B, T, Wp, F]  physiological features around each frame, z-scored per recording,
                 every `physio_window_step` frames over `physio_window_s` seconds (when `with_physio`)
    labels       float32 [B, T, 2]  (valence, arousal)
    label_mask   float32 [B, T]  1 where the label is valid
    frame_mask   float32 [B, T]  1 for a real frame, 0 for padding
    face_found   float32 [B, T]
    frame_index  int32 [B, T]
    video_id     str [B]
plus one key per `extra_arrays` entry: per-video arrays indexed by clip (or window) start, such as the
cached teacher outputs [T - L + 1, L, ...] (see `pkd_jax.precompute.teacher_cache`) or the gate's windowed
gamma [T - L + 1] (see `pkd_jax.precompute.gate_track`); and one key per `frame_arrays` entry: per-video
arrays indexed by time step (a frame, or a sub-sequence's first frame), such as frozen trunks' cached
features [T, D] (see `pkd_jax.precompute.trunk_features`), giving [B, T, D] (windows: [B, L, D]). With
`with_frames=False` (every frame's features are cached) the batch has no `frames`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np

from pkd_jax.data.cache import Cache, CachedVideo
from pkd_jax.data.physio_windows import PhysioWindows

MISSING_FACE_POLICIES = ("retain", "black")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What a batch looks like; the training config fills it."""

    clip_frames: int = 5
    batch_size: int = 8  # per process
    missing_face: str = "retain"  # "retain": repeat the last detected face (Table 5); "black"
    with_audio: bool = True
    audio_window_s: float = 1.0  # audio context per frame, centred on the frame
    augment: bool = False  # random horizontal flip and brightness/contrast jitter per clip
    seed: int = 0
    subsequences: int = 0  # windows of this many sub-sequences (strong setting); 0: clips
    subsequence_frames: int = 32  # frames per sub-sequence; `clip_frames` of them are sampled
    with_frames: bool = True  # False: no pixels in the batch (frozen trunk features stand for them)
    with_physio: bool = False  # physiological feature windows (needs a cache preprocessed with physio)
    physio_window_s: float = 8.0  # physiological context per frame, centred on the frame
    physio_window_step: int = 5  # frames between the window's samples (5: 5 Hz at 25 fps)

    def __post_init__(self) -> None:
        if self.missing_face not in MISSING_FACE_POLICIES:
            raise ValueError(
                f"missing_face={self.missing_face!r}; choose one of {list(MISSING_FACE_POLICIES)}"
            )
        if self.clip_frames < 1 or self.batch_size < 1:
            raise ValueError("clip_frames and batch_size must be positive")
        if self.with_physio and (self.physio_window_step < 1 or self.physio_window_s <= 0):
            raise ValueError(
                f"physio windows need physio_window_s > 0 and physio_window_step >= 1, got "
                f"{self.physio_window_s} and {self.physio_window_step}"
            )
        if self.subsequences < 0 or (self.subsequences and self.subsequence_frames < self.clip_frames):
            raise ValueError(
                f"windows need subsequences >= 0 and subsequence_frames={self.subsequence_frames} >= "
                f"clip_frames={self.clip_frames}"
            )

    @property
    def physio_offsets(self) -> np.ndarray:
        """Frame offsets of a physiological window's samples around its centre frame."""
        steps = max(1, round(self.physio_window_s * 25 / self.physio_window_step))
        return (np.arange(steps) - steps // 2) * self.physio_window_step

    @property
    def window_frames(self) -> int:
        """Frames spanned by one window (L * S)."""
        return self.subsequences * self.subsequence_frames

    def clip_offsets(self) -> np.ndarray:
        """Positions of the sampled frames inside a sub-sequence: a fixed stride ending on its last frame."""
        c, s = self.clip_frames, self.subsequence_frames
        return (np.arange(1, c + 1) * s) // c - 1


class FrameReader:
    """Slices frames, audio windows and labels of cached videos, applying the missing-face policy."""

    def __init__(
        self,
        cache: Cache,
        config: PipelineConfig,
        extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        frame_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ):
        self.cache = cache
        self.config = config
        self.extra_arrays = dict(extra_arrays or {})
        self.frame_arrays = dict(frame_arrays or {})
        self._last_found: dict[str, np.ndarray] = {}
        self.physio = PhysioWindows(cache, config.physio_offsets) if config.with_physio else None
        if config.with_audio:
            self.audio_mean, self.audio_std = cache.audio_stats()
            audio_cfg = cache.config.get("audio", cache.config)
            hop, sr, fps = audio_cfg["hop"], audio_cfg["sample_rate"], audio_cfg.get("fps", 25)
            self.mel_per_frame = round(sr / (fps * hop))
            self.window = max(1, round(config.audio_window_s * sr / hop))

    def last_found(self, video: CachedVideo) -> np.ndarray:
        """Index of the most recent frame with a face, at or before each frame (-1 before the first)."""
        if video.video_id not in self._last_found:
            found = np.asarray(video.face_found, bool)
            idx = np.where(found, np.arange(len(found)), -1)
            self._last_found[video.video_id] = np.maximum.accumulate(idx)
        return self._last_found[video.video_id]

    def frames(self, video: CachedVideo, index: np.ndarray) -> np.ndarray:
        """uint8 [len(index), S, S, 3] under the missing-face policy."""
        if self.config.missing_face == "retain":
            source = self.last_found(video)[index]
        else:
            source = np.where(np.asarray(video.face_found)[index], index, -1)
        out = video.frames[np.maximum(source, 0)]
        out[source < 0] = 0  # no face to show: black
        return out

    def audio(self, video: CachedVideo, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), n_mels, W, 1]: the z-scored log-mel window centred on each frame."""
        return self.audio_at(video, index * self.mel_per_frame + self.mel_per_frame // 2)

    def audio_at(self, video: CachedVideo, centre: np.ndarray) -> np.ndarray:
        """float32 [len(centre), n_mels, W, 1]: z-scored log-mel windows centred on mel columns `centre`."""
        cols = centre[:, None] - self.window // 2 + np.arange(self.window)[None, :]  # [L, W]
        inside = (cols >= 0) & (cols < video.logmel.shape[0])
        mel = np.asarray(video.logmel[np.clip(cols, 0, video.logmel.shape[0] - 1)], np.float32)
        mel = (mel - self.audio_mean) / self.audio_std  # [L, W, n_mels]
        mel[~inside] = 0.0  # outside the recording: the training mean
        return np.transpose(mel, (0, 2, 1))[..., None]

    def read(self, video_id: str, index: np.ndarray, *, rng: np.random.Generator | None = None) -> dict:
        """One clip or chunk of frames `index` of `video_id` (no batch axis)."""
        video = self.cache.video(video_id)
        example = {
            "labels": np.asarray(video.labels[index], np.float32),
            "label_mask": np.asarray(video.label_mask[index], np.float32),
            "frame_mask": np.ones(len(index), np.float32),
            "face_found": np.asarray(video.face_found[index], np.float32),
            "frame_index": index.astype(np.int32),
            "video_id": np.asarray(video_id),
        }
        if self.config.with_frames:
            frames = self.frames(video, index)
            example["frames"] = (
                augment_clip(frames, rng) if rng is not None and self.config.augment else frames
            )
        if self.config.with_audio:
            example["audio"] = self.audio(video, index)
        if self.physio is not None:
            example["physio"] = self.physio(video, index)
        for name, per_clip_start in self.extra_arrays.items():
            example[name] = np.asarray(per_clip_start[video_id][index[0]])
        for name, per_frame in self.frame_arrays.items():
            example[name] = np.asarray(per_frame[video_id][index], np.float32)
        return example

    def read_window(self, video_id: str, start: int, *, rng: np.random.Generator | None = None) -> dict:
        """One window of sub-sequences starting at frame `start` (no batch axis; see the module doc)."""
        config = self.config
        video = self.cache.video(video_id)
        n, length, sub = video.num_frames, config.subsequences, config.subsequence_frames
        sub_starts = start + np.arange(length) * sub
        real = sub_starts < n
        # Past the video's end, indices repeat its last frame; those sub-sequences are masked.
        index = np.minimum(sub_starts[:, None] + config.clip_offsets()[None, :], n - 1)  # [L, C]
        last = np.minimum(sub_starts + sub - 1, n - 1)
        example = {
            "labels": np.asarray(video.labels[last], np.float32),
            "label_mask": (np.asarray(video.label_mask[last], bool) & real).astype(np.float32),
            "frame_mask": real.astype(np.float32),
            "face_found": np.asarray(video.face_found[last], np.float32),
            "frame_index": last.astype(np.int32),
            "window_start": np.asarray(start, np.int32),
            "video_id": np.asarray(video_id),
        }
        if config.with_frames:
            frames = self.frames(video, index.reshape(-1))
            if rng is not None and config.augment:
                frames = augment_clip(frames, rng)  # one flip and jitter for the whole window
            example["frames"] = frames.reshape(*index.shape, *frames.shape[1:])
        if config.with_audio:
            # One audio window per sub-sequence, centred on it (frames [a, a + S) own mel columns
            # [a * k, (a + S) * k)).
            centre = np.minimum(sub_starts, n - 1) * self.mel_per_frame + sub * self.mel_per_frame // 2
            example["audio"] = self.audio_at(video, centre)
        if self.physio is not None:
            example["physio"] = self.physio(video, np.minimum(sub_starts + sub // 2, n - 1))
        for name, per_start in self.extra_arrays.items():
            example[name] = np.asarray(per_start[video_id][start])
        for name, per_step in self.frame_arrays.items():  # indexed by each sub-sequence's first frame
            example[name] = np.asarray(per_step[video_id][np.minimum(sub_starts, n - 1)], np.float32)
        return example


def augment_clip(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same random flip and brightness/contrast change on every frame of a clip (uint8 in and out)."""
    if rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    gain, offset = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    lut = np.clip(np.arange(256) * gain + offset, 0, 255).astype(np.uint8)
    return lut[frames]


def _draw_start(rng: np.random.Generator, starts_cum: np.ndarray) -> tuple[int, int]:
    """(video, start) drawn uniformly over all valid starts; `starts_cum` is their cumulative count per video."""
    position = int(rng.integers(starts_cum[-1]))
    video = int(np.searchsorted(starts_cum, position, side="right"))
    return video, position - int(starts_cum[video - 1] if video else 0)


class _SampleClip(grain.transforms.Map):
    """Clip k -> a uniformly drawn (video, start) of the training split, read from the cache.

    The generator is seeded by (seed, k) itself rather than by the element's position, so clip k is the
    same whichever process shard draws it.
    """

    def __init__(self, reader: FrameReader, video_ids: list[str], seed: int, stream: tuple[int, ...] = ()):
        self.reader = reader
        self.seed = [seed, *stream]  # a second stream (unlabelled clips) draws apart from the first
        self.video_ids = video_ids
        clip = reader.config.clip_frames
        lengths = np.array([reader.cache.video(v).num_frames for v in video_ids])
        short = [v for v, n in zip(video_ids, lengths, strict=True) if n < clip]
        if short:
            raise ValueError(f"videos shorter than clip_frames={clip}: {short}")
        self.starts_cum = np.cumsum(lengths - clip + 1)

    def map(self, element: int) -> dict:
        rng = np.random.default_rng([*self.seed, element])
        video, start = _draw_start(rng, self.starts_cum)
        index = np.arange(start, start + self.reader.config.clip_frames)
        return self.reader.read(self.video_ids[video], index, rng=rng)


class _SampleWindow(grain.transforms.Map):
    """Window k -> a uniformly drawn (video, start) of the training split, seeded by (seed, k).

    A video shorter than a window offers one start, 0, and its missing sub-sequences are masked.
    """

    def __init__(self, reader: FrameReader, video_ids: list[str], seed: int, stream: tuple[int, ...] = ()):
        self.reader = reader
        self.seed = [seed, *stream]
        self.video_ids = video_ids
        span = reader.config.window_frames
        lengths = np.array([reader.cache.video(v).num_frames for v in video_ids])
        self.starts_cum = np.cumsum(np.maximum(lengths - span + 1, 1))

    def map(self, element: int) -> dict:
        rng = np.random.default_rng([*self.seed, element])
        video, start = _draw_start(rng, self.starts_cum)
        return self.reader.read_window(self.video_ids[video], start, rng=rng)


class _ProcessBlock(grain.transforms.Map):
    """Element e of process `index`'s stream -> its clip, read by `samplers[0]`, or with a second stream
    (`extra` clips after the `batch_size` first of every batch) by `samplers[1]`: clip k of each stream's
    global sequence (see `train_dataset`)."""

    def __init__(self, samplers: list[Any], batch_size: int, extra: int, index: int, count: int):
        if not 0 <= index < count:
            raise ValueError(f"shard_index={index} is not in [0, shard_count={count})")
        self.samplers, self.sizes, self.index, self.count = samplers, (batch_size, extra), index, count

    def map(self, element: int) -> dict:
        step, row = divmod(element, sum(self.sizes))
        stream = int(row >= self.sizes[0])
        row -= stream * self.sizes[0]
        return self.samplers[stream].map((step * self.count + self.index) * self.sizes[stream] + row)


def train_dataset(
    cache: Cache,
    config: PipelineConfig,
    *,
    split: str = "train",
    shard_index: int = 0,
    shard_count: int = 1,
    extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    frame_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    video_ids: list[str] | None = None,
    unlabelled_ids: list[str] | None = None,
    unlabelled_batch_size: int = 0,
) -> grain.MapDataset:
    """An endless, seeded stream of training batches for this process's shard.

    Clips come from every `split` video, or from `video_ids` among them (the labelled recordings,
    `pkd_jax.data.labelled`). A semi-supervised student adds `unlabelled_batch_size` clips of
    `unlabelled_ids` after them in every batch, drawn by a stream of their own: its first
    `batch_size` clips are then the very ones a baseline of the same seed draws from `video_ids`.

    `config.batch_size` is the per-process batch b; with n processes the global batch of step s is
    clips s*n*b .. (s+1)*n*b - 1 of the global stream, and process i reads the i-th block of b of them.
    Processes never repeat each other's clips, and the global batch, in the same order, is the one a
    single process would draw, whatever the number of processes.
    """
    video_ids = cache.ids(split) if video_ids is None else list(video_ids)
    if not video_ids:
        raise ValueError(f"{cache.root}: no usable {split} videos (failures: {cache.failures()})")
    reader = FrameReader(cache, config, extra_arrays, frame_arrays)
    sample = _SampleWindow if config.subsequences else _SampleClip
    samplers = [sample(reader, video_ids, config.seed)]
    extra = unlabelled_batch_size if unlabelled_ids else 0
    if extra:
        samplers.append(sample(reader, list(unlabelled_ids or ()), config.seed, stream=(1,)))
    ds = grain.MapDataset.range(np.iinfo(np.int64).max // 2)
    ds = ds.map(_ProcessBlock(samplers, config.batch_size, extra, shard_index, shard_count))
    return ds.batch(config.batch_size + extra, drop_remainder=True)


def eval_batches(
    cache: Cache,
    split: str,
    *,
    chunk_frames: int,
    videos_per_batch: int = 1,
    with_audio: bool = True,
    missing_face: str = "retain",
    audio_window_s: float = 1.0,
    video_ids: list[str] | None = None,
    extra_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    physio: PipelineConfig | None = None,
    frame_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every frame of every video of `split` once, in order, as lanes of chunks.

    Yields batches with the keys of the module docstring plus `first_chunk` (bool: reset the carry).
    Empty lanes (fewer videos than `videos_per_batch` left) have `video_id` "" and a zero frame mask.
    `physio` (a config with `with_physio`) adds its physiological windows; `frame_arrays` per-frame
    arrays such as frozen trunks' cached features, which stand for their trunk's input: with
    `visual_features` the batch has no pixels, with `audio_features` no audio windows.
    """
    cached = frame_arrays or {}
    physio_fields = {
        k: getattr(physio, k) for k in ("with_physio", "physio_window_s", "physio_window_step")
    } if physio is not None else {}  # fmt: skip
    config = PipelineConfig(
        clip_frames=chunk_frames, batch_size=videos_per_batch, missing_face=missing_face,
        with_audio=with_audio and "audio_features" not in cached, audio_window_s=audio_window_s,
        with_frames="visual_features" not in cached, **physio_fields,
    )  # fmt: skip
    reader = FrameReader(cache, config, extra_arrays, frame_arrays)
    ids = cache.ids(split) if video_ids is None else list(video_ids)
    for group_start in range(0, len(ids), videos_per_batch):
        group = ids[group_start : group_start + videos_per_batch]
        lengths = [cache.video(v).num_frames for v in group]
        n_chunks = -(-max(lengths) // chunk_frames)
        template = reader.read(group[0], np.arange(1))
        for c in range(n_chunks):
            lanes = []
            for lane in range(videos_per_batch):
                if lane < len(group):
                    index = np.arange(c * chunk_frames, min((c + 1) * chunk_frames, lengths[lane]))
                    lanes.append(
                        _pad(reader.read(group[lane], index), chunk_frames)
                        if len(index)
                        else _empty(template, chunk_frames, group[lane])
                    )
                else:
                    lanes.append(_empty(template, chunk_frames, ""))
            batch = {k: np.stack([lane[k] for lane in lanes]) for k in lanes[0]}
            batch["first_chunk"] = np.asarray(c == 0)
            yield batch


def eval_windows(
    cache: Cache,
    split: str,
    config: PipelineConfig,
    *,
    windows_per_batch: int = 1,
    video_ids: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Windows tiling every video of `split` from frame 0, `windows_per_batch` at a time.

    Every frame belongs to exactly one sub-sequence of one window; the last window of a video is padded
    with masked sub-sequences. Lanes past the last window have `video_id` "" and a zero frame mask.
    """
    if not config.subsequences:
        raise ValueError("eval_windows needs a window config (subsequences > 0)")
    reader = FrameReader(cache, config)
    ids = cache.ids(split) if video_ids is None else list(video_ids)
    span = config.window_frames
    windows = [(v, s) for v in ids for s in range(0, cache.video(v).num_frames, span)]
    for first in range(0, len(windows), windows_per_batch):
        lanes = [reader.read_window(v, s) for v, s in windows[first : first + windows_per_batch]]
        while len(lanes) < windows_per_batch:
            empty = {k: np.zeros_like(v) for k, v in lanes[0].items()}
            empty["video_id"] = np.asarray("")
            lanes.append(empty)
        yield {k: np.stack([lane[k] for lane in lanes]) for k in lanes[0]}


def _pad(example: dict, length: int) -> dict:
    """Pads every per-frame array to `length` frames with zeros (frame_mask marks the padding)."""
    out = {}
    for key, value in example.items():
        if value.ndim == 0:
            out[key] = value
            continue
        pad = [(0, length - value.shape[0])] + [(0, 0)] * (value.ndim - 1)
        out[key] = np.pad(value, pad)
    return out


def _empty(template: dict, length: int, video_id: str) -> dict:
    """An all-padding lane shaped like `template`."""
    out = {k: np.zeros((length, *v.shape[1:]), v.dtype) for k, v in template.items() if v.ndim}
    out["video_id"] = np.asarray(video_id)
    return out
