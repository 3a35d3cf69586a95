"""The documentation site builds with `mkdocs build --strict` (every link, anchor, nav entry and API name
resolves), with the config reference generated from pkd_jax/defaults.py and the API reference from the
docstrings. Needs the `docs` extra: without mkdocs these tests fail, they do not skip."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pkd_jax import defaults

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "docs" / "gen_config_reference.py"


@functools.cache
def build(site: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("site")


def built(site: Path) -> Path:
    """The built site; fails the calling test (with mkdocs' output) when the build failed."""
    done, _ = build(site)
    if done.returncode != 0:
        hint = (
            "mkdocs is not installed (pip install -e '.[docs]')\n"
            if "No module named mkdocs" in done.stderr
            else ""
        )
        pytest.fail(f"{hint}mkdocs build --strict failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return site


def hook():
    spec = importlib.util.spec_from_file_location("gen_config_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(site):
    built(site)
    assert (site / "index.html").is_file()


def test_the_config_reference_is_generated_with_every_group(site):
    page = (built(site) / "config" / "index.html").read_text()
    assert "batch_size" in page and "clips per step" in page
    for group in ("data", "model", "optim", "loss", "teacher", "train", "eval", "pretrained", "experiment"):
        assert f'id="{group}"' in page, group
    assert "configs/recola_student.py" in page and "released_code" in page
    assert not (REPO / "docs" / "config.md").exists(), "config.md is generated, never a file in docs/"


def test_the_api_reference_documents_the_public_modules(site):
    root = built(site) / "api"
    expected = {
        "api": "pkd_jax.api.train",
        "losses": "pkd_jax.losses.compose.compose",
        "inference": "pkd_jax.inference.Predictor",
        "weights": "pkd_jax.weights.merge_into",
        "workdir": "pkd_jax.workdir.trained.load_trained",
        "faces": "pkd_jax.data.faces.register_detector",
        "defaults": "pkd_jax.defaults.get_config",
    }
    missing = {
        page: name
        for page, name in expected.items()
        if f'id="{name}"' not in (root / page / "index.html").read_text()
    }
    assert missing == {}


def test_the_reference_lists_every_config_field():
    groups = hook().all_groups((REPO / "pkd_jax" / "defaults.py").read_text())
    documented = {".".join(p for p in (g.name, f.name) if p) for g in groups for f in g.fields}

    def flat(tree, prefix=""):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    fields = set(flat(defaults.get_config("student").to_dict()))
    fields |= {f"experiment.{k}" for k in flat(defaults.experiment_fields().to_dict())}
    assert documented == fields


def test_a_field_without_a_comment_stops_the_build():
    source = """
import ml_collections

def get_config(stage, dataset="recola"):
    c = ml_collections.ConfigDict()
    c.stage = stage  # what to train
    c.data = d = ml_collections.ConfigDict()  # corpus
    d.batch_size = 8  # clips per step
    d.face_size = 112
    # a note on the next field
    d.root = ""  # raw corpus
    # (continued on its own line)
    return c
"""
    gen = hook()
    with pytest.raises(gen.ConfigReferenceError, match=r"line 9: data.face_size = 112 has no comment"):
        gen.parse_groups(source)
    groups = gen.parse_groups(source.replace("d.face_size = 112", "d.face_size = 112  # crop side"))
    data = {f.name: f for f in groups[1].fields}
    assert data["root"].comment == "raw corpus (continued on its own line)"
    assert groups[1].notes == ["Before `root`: a note on the next field"]
    assert groups[0].fields[0].default == "the `stage` argument"
