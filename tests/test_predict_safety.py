"""`pkd_jax.predict` refuses what would lose data or mislead: outputs that would overwrite an input or an
earlier run's outputs, two videos of one output name, a teacher's audio of another length than its video,
and paths that are not videos (a directory, a still image, nothing at all)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from configs import recola_teacher
from pkd_jax import inference
from pkd_jax.data.video import VideoInfo, VideoReader
from tests import test_predict as base
from tests.test_predict import CHUNK, REPO, make_workdir

# The trained tiny workdirs and synthetic videos of test_predict, shared here as fixtures.
cache, student_dir, videos, predictor = base.cache, base.student_dir, base.videos, base.predictor

RATE = 16000  # the cache's sample rate


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m pkd_jax.predict ARGS`, this checkout's package first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pkd_jax.predict", *args, f"--chunk_frames={CHUNK}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def face_png(video: Path, path: Path) -> Path:
    """The first frame of `video` (a face) as a PNG image."""
    frame = next(iter(VideoReader(video, 25)))
    assert cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1]))
    return path


def write_wav(path: Path, seconds: float) -> Path:
    """`seconds` of low noise at the cache's rate."""
    rng = np.random.default_rng(0)
    soundfile.write(path, rng.normal(0, 0.05, round(seconds * RATE)).astype(np.float32), RATE)
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, cache) -> Path:
    return make_workdir(tmp_path_factory.mktemp("teacher"), recola_teacher.get_config("tiny"), cache)


# 1. Outputs never overwrite inputs, and earlier outputs only with --overwrite.


def test_out_in_the_inputs_folder_never_overwrites_an_input(student_dir, videos, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    image = face_png(videos["steady"], folder / "image.png")  # its plot would be inputs/image.png
    clip = shutil.copy(videos["steady"], folder / "clip.mp4")
    before = image.read_bytes()
    out = f"{folder}/../inputs"  # another spelling of the same folder
    done = run_cli(f"--workdir={student_dir}", f"--video={clip}", f"--video={image}", f"--out={out}",
                   cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert image.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "image.png"]  # nothing written
    assert done.returncode != 0, output
    assert "refusing to overwrite an input file" in output and f"is the input {image}" in output, output
    assert "model from" not in output  # refused before the model was loaded


def test_outputs_that_are_links_to_inputs_are_refused_even_with_overwrite(predictor, videos, tmp_path):
    video = Path(shutil.copy(videos["steady"], tmp_path / "talk.mp4"))
    before = video.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "talk.csv").symlink_to(video)  # writing it would write the video
    with pytest.raises(ValueError, match="refusing to overwrite an input file"):
        inference.predict_files(predictor, [video], out, progress=False)
    assert video.read_bytes() == before and not (out / "summary.json").exists()
    audio = write_wav(tmp_path / "talk.wav", 1.6)
    os.link(audio, out / "talk.png")  # the audio file under a second name
    with pytest.raises(ValueError, match="refusing to overwrite an input file") as error:
        inference.plan_outputs([video], out, audio=[audio], overwrite=True)
    message = str(error.value)
    assert f"{out / 'talk.csv'} is the input {video}" in message
    assert f"{out / 'talk.png'} is the input {audio}" in message
    assert inference.plan_outputs([video], tmp_path / "fresh") == ["talk"]


def test_earlier_outputs_are_refused_up_front_and_replaced_with_overwrite(predictor, videos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "steady.csv").write_text("an earlier run\n")
    (out / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="outputs of an earlier run exist") as error:
        inference.predict_files(predictor, [videos["steady"]], out, progress=False)
    assert f"{out / 'steady.csv'}, {out / 'summary.json'}. Pass --overwrite" in str(error.value)
    assert (out / "steady.csv").read_text() == "an earlier run\n" and not (out / "steady.png").exists()
    rows = inference.predict_files(predictor, [videos["steady"]], out, overwrite=True, progress=False)
    assert rows[0]["ok"] and (out / "steady.csv").read_text().startswith("frame,time_s,valence,arousal")
    assert json.loads((out / "summary.json").read_text())["videos"][0]["frames"] == 40


def test_two_videos_of_one_name_are_refused_before_anything_is_written(predictor, videos, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = shutil.copy(videos["steady"], tmp_path / "a" / "x.mp4")
    second = shutil.copy(videos["steady"], tmp_path / "b" / "X.mp4")  # one file where case is ignored
    with pytest.raises(ValueError, match=r"a/x\.mp4 and .*b/X\.mp4 would both write X\.csv"):
        inference.predict_files(predictor, [first, second], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# 2. A teacher's audio must have its video's length, within preprocessing's tolerance.


def test_teacher_cli_refuses_audio_shorter_or_longer_than_the_video(teacher_dir, videos, tmp_path):
    longer = shutil.copy(videos["away"], tmp_path / "away_long.mp4")
    short, long = write_wav(tmp_path / "short.wav", 0.5), write_wav(tmp_path / "long.wav", 8.0)
    out = tmp_path / "out"
    done = run_cli(f"--workdir={teacher_dir}", f"--video={videos['away']}", f"--video={longer}",
                   f"--audio={short}", f"--audio={long}", f"--out={out}", cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    for video, audio, seconds in ((videos["away"], short, "0.50 s"), (longer, long, "8.00 s")):
        assert f"{video}: stream lengths differ by" in output, output
        assert f"video 100 frames ({video}, 4.00 s)" in output and f"({audio}, {seconds})" in output
    assert "0 of 2 videos predicted, 2 failed" in done.stdout
    assert [v["ok"] for v in json.loads((out / "summary.json").read_text())["videos"]] == [False, False]


def test_teacher_checks_the_decoded_length_and_the_other_videos_finish(
    teacher_dir, videos, tmp_path, monkeypatch
):
    # Containers that state no frame count: the decoded length is checked after decoding.
    def no_count(path):
        return VideoInfo(Path(path), 25.0, 0, 128, 128, False)

    monkeypatch.setattr("pkd_jax.inference.predictor.probe_video", no_count, raising=False)
    teacher = inference.Predictor(inference.load_trained(teacher_dir), chunk_frames=CHUNK)
    within = shutil.copy(videos["away"], tmp_path / "within.mp4")
    audio = [write_wav(tmp_path / "short.wav", 0.5), write_wav(tmp_path / "steady.wav", 1.6),
             write_wav(tmp_path / "within.wav", 3.6)]  # fmt: skip
    rows = inference.predict_files(
        teacher, [videos["away"], videos["steady"], within], tmp_path / "out", audio=audio, progress=False
    )
    assert [r["ok"] for r in rows] == [False, True, True]  # 3.6 s for 4 s: 10 frames, within 25
    assert rows[0]["error"].startswith(f"{videos['away']}: stream lengths differ by 87 frames")
    assert f"({audio[0]}, 0.50 s)" in rows[0]["error"]
    assert rows[1]["frames"] == 40 and rows[2]["frames"] == 100


# 3. Paths that are not videos fail as such; the other videos finish.


def test_directories_images_and_missing_paths_fail_with_their_reason(predictor, videos, tmp_path):
    still = shutil.copy(face_png(videos["steady"], tmp_path / "frame.png"), tmp_path / "still.mp4")
    paths = [
        videos["steady"],
        videos["steady"].parent,  # recordings_video/
        face_png(videos["steady"], tmp_path / "face.PNG"),
        still,  # a PNG under a video's name
        tmp_path / "missing.mp4",
    ]
    rows = inference.predict_files(predictor, paths, tmp_path / "out", progress=False)
    assert [r["ok"] for r in rows] == [True, False, False, False, False]
    assert [r["error"] for r in rows[1:]] == [
        f"{paths[1]}: is a directory, not a video file",
        f"{paths[2]}: holds a single image, not a video",
        f"{paths[3]}: holds a single image, not a video",
        f"{paths[4]}: does not exist",
    ]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [v.get("error") for v in summary["videos"]] == [None] + [r["error"] for r in rows[1:]]
    assert (tmp_path / "out" / "steady.csv").is_file()
