"""Input pipeline on a hand-made cache: clips, missing-face policies, audio windows, eval coverage."""

import numpy as np
import pytest

from pkd_jax.data.cache import Cache, CacheWriter, VideoRecord
from pkd_jax.data.pipeline import PipelineConfig, eval_batches, train_dataset

N_MELS, SIZE = 6, 8


def fake_video(rng, n_frames, absent=()):
    frames = np.zeros((n_frames, SIZE, SIZE, 3), np.uint8)
    frames[:] = (np.arange(n_frames) % 250 + 1)[:, None, None, None]  # pixel value encodes the frame
    found = np.ones(n_frames, bool)
    for a, b in absent:
        found[a:b] = False
        frames[a:b] = 0
    mel = np.repeat(np.arange(4 * n_frames, dtype=np.float16)[:, None], N_MELS, axis=1)  # value = mel index
    labels = rng.uniform(-1, 1, (n_frames, 2)).astype(np.float32)
    return {"frames": frames, "face_found": found, "logmel": mel, "labels": labels,
            "label_mask": np.ones(n_frames, bool)}  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    writer = CacheWriter(
        root, dataset="fake", config={"audio": {"sample_rate": 16000, "hop": 160}, "fps": 25}
    )
    rng = np.random.default_rng(0)
    specs = {"train_1": (40, [(10, 15)]), "train_2": (23, [(0, 3)]), "dev_1": (17, []), "dev_2": (9, [])}
    for vid, (n, absent) in specs.items():
        split = vid.split("_")[0]
        arrays = fake_video(rng, n, absent)
        writer.write_video(VideoRecord(vid, split, "ok", num_frames=n), arrays)
    writer.finalize([(v, v.split("_")[0]) for v in specs])
    return Cache(root)


def take(ds, n):
    it = iter(ds.to_iter_dataset())
    return [next(it) for _ in range(n)], it


def test_training_batches_shapes_and_alignment(cache):
    cfg = PipelineConfig(clip_frames=5, batch_size=3, seed=1)
    (batch,), _ = take(train_dataset(cache, cfg), 1)
    assert batch["frames"].shape == (3, 5, SIZE, SIZE, 3) and batch["frames"].dtype == np.uint8
    assert batch["audio"].shape == (3, 5, N_MELS, 100, 1) and batch["audio"].dtype == np.float32
    assert batch["labels"].shape == (3, 5, 2) and batch["video_id"].shape == (3,)
    for b in range(3):
        video = cache.video(str(batch["video_id"][b]))
        idx = batch["frame_index"][b]
        assert np.all(np.diff(idx) == 1)  # consecutive frames
        np.testing.assert_array_equal(batch["labels"][b], video.labels[idx])
        assert str(batch["video_id"][b]).startswith("train")


def test_same_seed_same_batches_other_seed_differs_and_state_resumes(cache):
    cfg = PipelineConfig(clip_frames=4, batch_size=2, seed=7)
    first, _ = take(train_dataset(cache, cfg), 4)
    again, it = take(train_dataset(cache, cfg), 2)
    state = it.get_state()
    rest = [next(it) for _ in range(2)]
    for a, b in zip(first, again + rest, strict=True):
        np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
        np.testing.assert_array_equal(a["frames"], b["frames"])
    resumed = iter(train_dataset(cache, cfg).to_iter_dataset())
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["frame_index"], rest[0]["frame_index"])
    other, _ = take(train_dataset(cache, PipelineConfig(clip_frames=4, batch_size=2, seed=8)), 4)
    assert any(
        not np.array_equal(a["frame_index"], b["frame_index"]) for a, b in zip(first, other, strict=True)
    )


def test_shards_partition_the_stream(cache):
    cfg = PipelineConfig(clip_frames=4, batch_size=1, seed=3, with_audio=False)
    single, _ = take(train_dataset(cache, cfg), 4)
    shard0, _ = take(train_dataset(cache, cfg, shard_index=0, shard_count=2), 2)
    shard1, _ = take(train_dataset(cache, cfg, shard_index=1, shard_count=2), 2)
    interleaved = [shard0[0], shard1[0], shard0[1], shard1[1]]
    for a, b in zip(single, interleaved, strict=True):
        np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
        assert a["video_id"][0] == b["video_id"][0]


@pytest.mark.parametrize("policy", ["retain", "black"])
def test_missing_face_policy(cache, policy):
    batches = list(eval_batches(cache, "train", chunk_frames=40, video_ids=["train_1", "train_2"],
                                videos_per_batch=2, missing_face=policy, with_audio=False))  # fmt: skip
    frames = batches[0]["frames"][0]  # train_1, no face in frames 10..14
    if policy == "retain":
        assert np.all(frames[10:15] == frames[9])
    else:
        assert np.all(frames[10:15] == 0)
    assert np.all(frames[16] == 17)  # a found face is never replaced
    start = batches[0]["frames"][1]  # train_2: no face before frame 3, nothing to retain
    assert np.all(start[0:3] == 0)


def test_audio_window_is_centred_on_the_frame_and_zero_outside(cache):
    cfg = PipelineConfig(clip_frames=5, batch_size=1, audio_window_s=0.1)  # 10 mel frames
    batch = next(eval_batches(cache, "dev", chunk_frames=17, video_ids=["dev_1"], audio_window_s=0.1))
    mean, std = cache.audio_stats()
    raw = batch["audio"][0, :, 0, :, 0] * std[0] + mean[0]  # back to mel indices
    t = 8
    np.testing.assert_allclose(raw[t], np.arange(4 * t + 2 - 5, 4 * t + 2 + 5), atol=0.05)
    assert np.allclose(batch["audio"][0, 0, :, :3, 0], 0.0)  # before the recording starts
    assert cfg.clip_frames == 5


def test_eval_covers_every_frame_once_in_order_with_padding(cache):
    seen = {}
    firsts = []
    for batch in eval_batches(cache, "dev", chunk_frames=4, videos_per_batch=3):
        firsts.append(bool(batch["first_chunk"]))
        assert batch["frames"].shape[:2] == (3, 4)
        for lane in range(3):
            vid = str(batch["video_id"][lane])
            keep = batch["frame_mask"][lane] > 0
            if vid:
                seen.setdefault(vid, []).extend(batch["frame_index"][lane][keep].tolist())
            else:
                assert not keep.any()
    assert seen == {"dev_1": list(range(17)), "dev_2": list(range(9))}
    assert firsts == [True] + [False] * 4  # ceil(17 / 4) chunks, carry reset only at the start


def test_bad_policy_and_short_videos_are_errors(cache):
    with pytest.raises(ValueError, match="missing_face"):
        PipelineConfig(missing_face="blur")
    with pytest.raises(ValueError, match="shorter than clip_frames"):
        take(train_dataset(cache, PipelineConfig(clip_frames=30, batch_size=1)), 1)


def test_generator_preprocess_pipeline_end_to_end(tiny_cache, tiny_corpus):
    """Synthetic corpus -> preprocessing -> batches: frames, audio and labels line up with the corpus."""
    from pkd_jax.data.recola_format import read_arff_gold

    root, _ = tiny_cache
    opened = Cache(root)
    cfg = PipelineConfig(clip_frames=6, batch_size=4, seed=2)
    ds = train_dataset(opened, cfg)
    batch = ds[0]
    again = train_dataset(opened, cfg)[0]
    np.testing.assert_array_equal(batch["frames"], again["frames"])  # same seed, same batch
    assert batch["frames"].shape == (4, 6, 48, 48, 3)
    assert batch["audio"].shape == (4, 6, 64, 100, 1) and np.isfinite(batch["audio"]).all()
    for b in range(4):
        vid, idx = str(batch["video_id"][b]), batch["frame_index"][b]
        _, valence = read_arff_gold(tiny_corpus / "ratings_gold_standard" / "valence" / f"{vid}.arff")
        np.testing.assert_allclose(batch["labels"][b, :, 0], valence[idx], atol=1e-6)
    seen = {}
    for chunk in eval_batches(opened, "dev", chunk_frames=64, videos_per_batch=1):
        keep = chunk["frame_mask"][0] > 0
        seen.setdefault(str(chunk["video_id"][0]), []).extend(chunk["frame_index"][0][keep].tolist())
    assert seen == {"dev_1": list(range(opened.video("dev_1").num_frames))}
