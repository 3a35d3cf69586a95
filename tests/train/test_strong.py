"""The strong setting end to end: synthetic Aff-Wild2 corpus -> windows -> JCA teacher -> PKD student."""

import json
import sys
from pathlib import Path

import av
import jax
import numpy as np
import pytest
from absl import flags

from configs import affwild2_student, affwild2_teacher, affwild2_visual, demo
from pkd_jax.config import build
from pkd_jax.config import check as config_check
from pkd_jax.data import synthetic
from pkd_jax.data.affwild2 import read_labels
from pkd_jax.data.cache import Cache
from pkd_jax.data.pipeline import PipelineConfig, eval_windows, train_dataset
from pkd_jax.train import setup
from pkd_jax.workdir.metric_writer import read_metrics

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
SECONDS = 3.0  # 75 frames: two tiny windows of 4 x 8 frames and a padded third


def run_main(stage: str, workdir: Path, root: Path, *overrides: str) -> None:
    """`python -m pkd_jax.main --config=configs/affwild2_<stage>.py:tiny` in this process."""
    from pkd_jax import main as entry

    argv = [
        "pkd_jax.main",
        f"--config={REPO / 'configs' / f'affwild2_{stage}.py'}:tiny",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
        f"--config.train.num_steps={STEPS}",
        "--config.train.log_every=2",
        f"--config.train.eval_every={STEPS}",
        f"--config.train.checkpoint_every={STEPS}",
        *overrides,
    ]
    saved, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
    try:
        flags.FLAGS.unparse_flags()
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)
        entry.main(flags.FLAGS(argv))
    finally:
        sys.argv = saved


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("affwild2_synthetic")
    config = synthetic.SyntheticConfig(frame_width=64, frame_height=64, face_absent_fraction=0.1)
    ids = synthetic.generate_affwild2_corpus(
        out, 2, 1, SECONDS, 0, config, progress=False, crop_size=40, invalid_fraction=0.1
    )
    assert ids == ["train_1", "train_2_left", "train_2_right", "dev_1"]
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, corpus):
    workdir = tmp_path_factory.mktemp("affwild2_teacher")
    run_main("teacher", workdir, corpus)
    return workdir


def test_synthetic_corpus_has_the_affwild2_layout(corpus):
    labels = corpus / "VA_Estimation_Challenge"
    assert sorted(p.name for p in (labels / "Train_Set").iterdir()) == [
        "train_1.txt", "train_2_left.txt", "train_2_right.txt",
    ]  # fmt: skip
    assert [p.name for p in (labels / "Validation_Set").iterdir()] == ["dev_1.txt"]
    # The pair shares one recording, which carries the audio.
    assert sorted(p.name for p in (corpus / "videos").iterdir()) == [
        "dev_1.mp4",
        "train_1.mp4",
        "train_2.mp4",
    ]
    with av.open(str(corpus / "videos" / "train_2.mp4")) as container:
        assert container.streams.audio and container.streams.video
        assert container.streams.video[0].width == 128  # two 64-pixel people side by side
    text = (labels / "Train_Set" / "train_2_left.txt").read_text().splitlines()
    assert text[0] == "valence,arousal" and len(text) == 1 + round(SECONDS * 25)
    values, valid = read_labels(labels / "Train_Set" / "train_2_left.txt")
    assert 0 < (~valid).sum() < len(valid) and np.abs(values).max() <= 1
    crops = sorted((corpus / "cropped_aligned" / "train_2_right").glob("*.jpg"))
    assert crops[0].name == "00001.jpg" or crops[0].name.endswith(".jpg")
    assert 0 < len(crops) < len(valid)  # face-absent frames have no crop


def test_windows_sample_subsequences_and_mask_invalid_labels(corpus, teacher_dir):
    cache = Cache(corpus / "pkd_jax_cache")
    config = affwild2_teacher.get_config("tiny")
    pipeline = PipelineConfig(
        clip_frames=config.data.clip_frames, batch_size=3, audio_window_s=config.data.audio_window_s,
        seed=1, **build.window_fields(config),
    )  # fmt: skip
    assert list(pipeline.clip_offsets()) == [1, 3, 5, 7]  # 4 of 8 frames, ending on the last
    batch = train_dataset(cache, pipeline)[0]
    size = config.data.face_size
    assert batch["frames"].shape == (3, 4, 4, size, size, 3)
    assert batch["audio"].shape == (3, 4, 64, 32, 1)
    for lane, vid in enumerate(batch["video_id"]):
        video = cache.video(str(vid))
        last = batch["window_start"][lane] + np.arange(4) * 8 + 7
        np.testing.assert_array_equal(batch["frame_index"][lane], last)
        np.testing.assert_allclose(batch["labels"][lane], video.labels[last])
        np.testing.assert_array_equal(batch["label_mask"][lane], video.label_mask[last])
    # Evaluation windows tile every frame once; the padded tail is masked.
    seen = {}
    for batch in eval_windows(cache, "train", pipeline, windows_per_batch=2):
        for lane, vid in enumerate(batch["video_id"]):
            if vid:
                real = batch["frame_mask"][lane] > 0
                seen.setdefault(str(vid), []).extend(batch["frame_index"][lane][real])
                assert not (batch["label_mask"][lane] > batch["frame_mask"][lane]).any()
    for vid, last_frames in seen.items():
        n = cache.video(vid).num_frames
        assert last_frames == [min(s + 7, n - 1) for s in range(0, n, 8)]


def test_teacher_to_student_through_main(tmp_path, corpus, teacher_dir):
    result = json.loads((teacher_dir / "eval.json").read_text())
    assert result["score"] == "concatenated"
    assert result["mean_ccc"] == pytest.approx(np.mean(list(result["raw"]["concatenated"].values())))
    frames = Cache(corpus / "pkd_jax_cache").video("dev_1").num_frames
    csv = (teacher_dir / "predictions" / str(STEPS) / "dev_1.csv").read_text().splitlines()
    assert len(csv) == 1 + frames  # every dev frame has a prediction

    # Trust the teacher everywhere, so distillation is on; gamma of each window from the teacher's track.
    theta = ["--config.loss.theta=10.0", "--config.loss.theta_quantile=0"]
    gate = ["--config.loss.gate_context=window", "--config.loss.gate_window_frames=40"]
    run_main(
        "student", tmp_path / "student", corpus, f"--config.teacher.workdir={teacher_dir}", *theta, *gate
    )
    train = read_metrics(tmp_path / "student", "train")
    assert train[0]["distilled_fraction"] == 1.0 and all(np.isfinite(r["distill_loss"]) for r in train)
    evals = read_metrics(tmp_path / "student", "eval")
    assert [r["step"] for r in evals] == [STEPS] and np.isfinite(evals[0]["mean_ccc"])
    info = json.loads((tmp_path / "student" / "gate.json").read_text())
    assert info["context"] == "window" and info["expected_distilled_share"] == 1.0
    gammas = np.load(tmp_path / "student" / "gate" / "gammas.npz")["gamma"]
    assert np.all(np.isfinite(gammas)) and (tmp_path / "student" / "gate" / "track.npz").is_file()


def test_strong_configs_and_guards():
    teacher, visual, student = (m.get_config() for m in (affwild2_teacher, affwild2_visual, affwild2_student))
    assert (teacher.stage, visual.stage, student.stage) == ("teacher", "visual", "student")
    assert teacher.model.visual_trunk == "r3d18" and teacher.model.fusion == "jca"
    assert (teacher.data.window_subsequences, teacher.data.subsequence_frames, teacher.data.clip_frames) == (
        8, 32, 8,
    )  # fmt: skip
    assert student.eval.score == "concatenated" and student.teacher.mode == "online"
    with pytest.raises(ValueError, match="unknown config argument"):
        affwild2_teacher.get_config("released_code")
    strong = demo.get_config("strong")
    assert strong.experiment.corpus_layout == "affwild2" and "teacher_black" not in strong.experiment.methods

    cached = affwild2_student.get_config("tiny").unlock()
    cached.data.root, cached.teacher.workdir, cached.teacher.mode = "/data", "/teacher", "cached"
    with pytest.raises(ValueError, match=r"teacher\.mode='online'"):
        config_check.validate_config(cached)


def test_student_projects_its_embedding_onto_an_attended_teacher_embedding():
    config = affwild2_student.get_config("tiny").unlock()
    config.model.jca_embedding = "attended"
    student = build.build_student(config)
    inputs = build.example_inputs(config, teacher=False)
    variables = jax.eval_shape(lambda: student.init(jax.random.key(0), *inputs))
    assert "embed_proj" in variables["params"]["head"]
    _, emb = jax.eval_shape(lambda v: student.apply(v, *inputs), variables)
    assert emb.shape[-1] == 2 * config.model.jca_dim
    config.stage = "teacher"
    teacher = build.build_teacher(config)
    inputs = build.example_inputs(config, teacher=True)
    variables = jax.eval_shape(lambda: teacher.init(jax.random.key(0), *inputs))
    _, teacher_emb = jax.eval_shape(lambda v: teacher.apply(v, *inputs), variables)
    assert teacher_emb.shape == emb.shape


def test_pretrained_r3d18_weights_load_through_the_config(tmp_path):
    torch = pytest.importorskip("torch")
    from pkd_jax.testing.torch_reference import R3D18Torch

    config = affwild2_visual.get_config("tiny").unlock()
    ref = R3D18Torch(width=config.model.r3d_width)  # torchvision names, 400-class fc included
    torch.save(ref.state_dict(), tmp_path / "r3d_18.pth")
    config.pretrained.visual_cnn = str(tmp_path / "r3d_18.pth")
    model = build.build_model(config)
    inputs = build.example_inputs(config, teacher=False)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
    loaded = setup.load_pretrained(config, variables)
    want = ref.layer3[0].downsample[0].weight.detach().numpy().transpose(2, 3, 4, 1, 0)
    np.testing.assert_array_equal(loaded["params"]["visual_cnn"]["layer3_0"]["downsample_0"]["kernel"], want)
    np.testing.assert_array_equal(
        loaded["batch_stats"]["visual_cnn"]["stem_1"]["var"], ref.stem[1].running_var.numpy()
    )
