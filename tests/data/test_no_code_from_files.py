"""No code runs because a data file names it, and preprocessing workers die with their parent.

- A cache manifest (which a shared workdir ships, and `python -m pkd_jax.predict` reads) naming a detector
  as `"module:factory"` imports nothing: the module beside it, whose import would leave a marker file, is
  never run, in process and through the CLI started from inside the workdir (cwd on sys.path).
- `create_detector` takes registered names only; a detector of the user's own is registered by a plugin
  module the user names (`detector_modules`, `--detector_module`), imported in every worker.
- A preprocessing run whose parent is killed by SIGKILL leaves no worker process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest

import pkd_jax
from pkd_jax import inference
from pkd_jax.data import faces
from pkd_jax.data.cache import CacheError
from pkd_jax.data.corpus_to_cache import preprocess_corpus
from pkd_jax.data.faces import create_detector, register_detector
from pkd_jax.data.preprocess_config import PreprocessConfig

# The checkout whose pkd_jax is under test: subprocesses must import the same one.
CHECKOUT = Path(pkd_jax.__file__).resolve().parents[1]
EVIL = "evil_detector_plugin"
PLUGIN = "centre_box_plugin"

EVIL_SOURCE = """
from pathlib import Path
(Path(__file__).parent / "EVIL_RAN").write_text("imported")
def make(**options):
    raise RuntimeError("the evil factory ran")
"""

# Registers `centre_box`: a detector that always finds the centre square; each process creating one leaves
# a file named by its pid, so the test sees which processes built it.
PLUGIN_SOURCE = """
import os
from pathlib import Path
from pkd_jax.data.faces import register_detector

class CentreBox:
    def __init__(self, **options):
        (Path(__file__).parent / "pids").mkdir(exist_ok=True)
        (Path(__file__).parent / "pids" / str(os.getpid())).touch()

    def reset(self):
        pass

    def detect(self, frame):
        h, w = frame.shape[:2]
        return (w // 4, h // 4, w // 2, h // 2)

register_detector("centre_box")(CentreBox)
"""


def env() -> dict[str, str]:
    """This environment, with the pkd_jax under test importable (after the working directory)."""
    return dict(os.environ, PYTHONPATH=str(CHECKOUT))


@pytest.fixture
def evil_dir(tmp_path, monkeypatch) -> Path:
    """A directory holding `evil_detector_plugin.py`, on sys.path and the working directory."""
    (tmp_path / f"{EVIL}.py").write_text(EVIL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop(EVIL, None)


def evil_cache(cache_dir: Path, dst: Path, detector: str = f"{EVIL}:make") -> Path:
    """A copy of the manifest of `cache_dir` whose preprocessing config names `detector`."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["config"]["detector"] = detector
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_create_detector_takes_registered_names_and_imports_nothing(evil_dir):
    with pytest.raises(ValueError, match="looks like an import path"):
        create_detector("some.module:factory")
    with pytest.raises(ValueError, match="looks like an import path"):
        create_detector(f"{EVIL}:make")
    with pytest.raises(ValueError, match=r"'nope' is not registered.*--detector_module"):
        create_detector("nope")
    assert not (evil_dir / "EVIL_RAN").exists() and EVIL not in sys.modules
    with pytest.raises(ValueError, match="looks like an import path"):
        PreprocessConfig(detector="pkg.mod:factory")
    with pytest.raises(ValueError, match="letters, digits"):
        register_detector("pkg/mod")


def test_a_manifest_naming_an_import_path_runs_no_code(tiny_cache, evil_dir):
    cache = evil_cache(tiny_cache[0], evil_dir / "cache")
    config = ml_collections.ConfigDict({"data": {"face_size": tiny_cache[1]["config"]["face_size"]}})
    manifest = cache / "manifest.json"
    with pytest.raises(CacheError, match=rf"{re.escape(str(manifest))}: .*not registered.*--detector_module"):
        inference.preprocess_settings(config, cache)
    settings = json.loads(manifest.read_text())["config"]
    with pytest.raises(ValueError, match="looks like an import path"):
        inference.make_cropper(settings)
    assert not (evil_dir / "EVIL_RAN").exists() and EVIL not in sys.modules
    # A plain name that is not registered: a detector of the user's own, without its plugin module.
    plain = evil_cache(tiny_cache[0], evil_dir / "plain", detector="my_detector")
    with pytest.raises(CacheError, match=r"plain/manifest.json: .*'my_detector' is not registered"):
        inference.preprocess_settings(config, plain)
    # Export only records the name: it reads the settings without needing the detector.
    settings, _ = inference.preprocess_settings(config, plain, need_detector=False)
    assert settings["detector"] == "my_detector"


def test_predict_from_inside_a_shared_workdir_runs_none_of_its_code(tiny_corpus, tmp_path):
    from configs import recola_student
    from tests.test_predict import make_cache, make_workdir

    workdir = tmp_path / "shared_run"
    cache = make_cache(workdir / "cache")  # a workdir shipped with its cache and a module beside it
    evil_cache(cache, cache)
    make_workdir(workdir, recola_student.get_config("tiny"), cache)
    (workdir / f"{EVIL}.py").write_text(EVIL_SOURCE)
    video = tiny_corpus / "recordings_video" / "dev_1.mp4"
    command = [sys.executable, "-m", "pkd_jax.predict", "--workdir=.", f"--video={video}", "--out=out"]
    done = subprocess.run(command, cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert not (workdir / "EVIL_RAN").exists(), output
    assert done.returncode != 0 and "not registered" in output and "--detector_module" in output, output
    assert str(cache / "manifest.json") in output or "cache/manifest.json" in output, output


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    """A directory holding the `centre_box` plugin module, on sys.path (which spawned workers inherit);
    afterwards the module and its registration are forgotten."""
    root = tmp_path / "plugin"
    root.mkdir()
    (root / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(faces, "_REGISTRY", dict(faces._REGISTRY))
    yield root
    sys.modules.pop(PLUGIN, None)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_plugin_named_by_the_user_registers_a_detector_in_every_worker(
    workers, plugin_dir, tiny_corpus, copy_corpus, tmp_path
):
    corpus = copy_corpus(tiny_corpus, tmp_path / "corpus", ("train_1", "dev_1"))
    config = PreprocessConfig(face_size=48, detector="centre_box")
    manifest = preprocess_corpus(
        "synthetic", corpus, tmp_path / "cache", config, workers=workers, progress=False, verbose=False,
        detector_modules=[PLUGIN],
    )  # fmt: skip
    videos = manifest["videos"]
    assert {v: m["status"] for v, m in videos.items()} == {"train_1": "ok", "dev_1": "ok"}, videos
    assert all(m["face_found_fraction"] == 1.0 for m in videos.values())  # the plugin's detector
    pids = {int(p.name) for p in (plugin_dir / "pids").iterdir()}
    assert os.getpid() in pids  # the parent checks the name before starting
    # Spawned workers inherit no registration: each that got a video imported the plugin itself.
    assert len(pids - {os.getpid()}) >= 1 if workers == 2 else pids == {os.getpid()}


def test_preprocess_cli_takes_detector_modules(plugin_dir, tiny_corpus, copy_corpus, tmp_path):
    corpus = copy_corpus(tiny_corpus, tmp_path / "corpus", ("train_1", "dev_1"))
    base = [sys.executable, "-m", "pkd_jax.preprocess", "--dataset=synthetic", f"--src={corpus}"]
    base += ["--face_size=48", "--noprogress", "--workers=2", "--detector=centre_box"]
    run = {"cwd": plugin_dir, "env": env(), "capture_output": True, "text": True, "timeout": 300}
    done = subprocess.run([*base, f"--out={tmp_path / 'no_plugin'}"], **run)
    assert done.returncode == 2 and "'centre_box' is not registered" in done.stderr, done.stderr
    done = subprocess.run([*base, f"--out={tmp_path / 'cache'}", f"--detector_module={PLUGIN}"], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert [m["face_found_fraction"] for m in manifest["videos"].values()] == [1.0, 1.0]
    assert len(list((plugin_dir / "pids").iterdir())) >= 2  # the CLI's process and its worker(s)


# ------------------------------------------------------------------------------------------------
# Orphaned workers.

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _workers(parent: int) -> dict[int, int]:
    """{pid: start time} of the multiprocessing workers (not the resource tracker) `parent` spawned."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] == parent:
            with_args = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"spawn_main" in with_args and b"resource_tracker" not in with_args:
                found[int(entry.name)] = stat[2]
    return found


def _alive(pid: int, started: int) -> bool:
    """Whether process `pid` started at `started` still runs (a zombie or a reused pid is gone)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[1] != "Z"


def _wait_gone(procs: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.monotonic() + seconds
    while (alive := {p: s for p, s in procs.items() if _alive(p, s)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _kill(procs: dict[int, int]) -> None:
    for pid, started in procs.items():
        if _alive(pid, started):
            os.kill(pid, signal.SIGKILL)


PREPROCESS = (
    "import sys\n"
    "from pkd_jax.data.corpus_to_cache import preprocess_corpus\n"
    "from pkd_jax.data.preprocess_config import PreprocessConfig\n"
    "preprocess_corpus('synthetic', sys.argv[1], sys.argv[2], PreprocessConfig(face_size=48), workers=2,\n"
    "                  progress=False, verbose=False)\n"
)


@needs_proc
def test_workers_exit_when_the_parent_is_killed(tiny_corpus, copy_corpus, tmp_path):
    corpus = copy_corpus(tiny_corpus, tmp_path / "corpus")
    for i in range(3, 13):  # 13 videos: several seconds of work left when the first is written
        for folder, ext in (("recordings_video", "mp4"), ("recordings_audio", "wav")):
            shutil.copy2(corpus / folder / f"train_1.{ext}", corpus / folder / f"train_{i}.{ext}")
        for dim in ("arousal", "valence"):
            ratings = corpus / "ratings_gold_standard" / dim
            shutil.copy2(ratings / "train_1.arff", ratings / f"train_{i}.arff")
    cache = tmp_path / "cache"
    parent = subprocess.Popen([sys.executable, "-c", PREPROCESS, str(corpus), str(cache)], env=env())
    workers: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not (len(workers) == 2 and list(cache.glob("videos/*/meta.json"))):
            assert parent.poll() is None and time.monotonic() < deadline, "the run ended or never started"
            workers = _workers(parent.pid)
            time.sleep(0.1)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        left = _wait_gone(workers, 10.0)
        assert not left, f"workers {sorted(left)} outlived their SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        _kill(workers)


# Portable path (no PR_SET_PDEATHSIG): a grandchild that only has the polling thread exits with its parent.
GRANDCHILD = (
    "import os, sys, time\n"
    "from pkd_jax.data.worker_process import exit_with_parent\n"
    "sys.platform = 'not-linux'  # after the imports: no prctl, only the polling thread\n"
    "exit_with_parent(os.getppid())\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(120)\n"
)


@needs_proc
def test_the_polling_thread_alone_exits_with_the_parent(tmp_path):
    ready = tmp_path / "ready"
    start = f"subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}, {str(ready)!r}])"
    code = f"import subprocess, sys, time\n{start}\ntime.sleep(120)\n"
    parent = subprocess.Popen([sys.executable, "-c", code], env=env())
    child: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()):
            assert parent.poll() is None and time.monotonic() < deadline, "the grandchild never got ready"
            time.sleep(0.1)
        pid = int(ready.read_text())
        child = {pid: _stat(pid)[2]}
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not _wait_gone(child, 5.0), "the grandchild outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        _kill(child)
