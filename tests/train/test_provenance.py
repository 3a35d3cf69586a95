"""Provenance of results (`pkd_jax.provenance`) and the model card of a trained workdir."""

import datetime
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pkd_jax import defaults
from pkd_jax import provenance as prov
from pkd_jax.workdir.config_record import (
    AMENDMENTS_NAME,
    config_changes,
    read_config,
    read_provenance,
    record_config,
)
from pkd_jax.workdir.model_card import write_model_card

REPO = Path(__file__).resolve().parents[2]
SHA = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture
def fresh_git_state():
    prov._git_state.cache_clear()
    yield
    prov._git_state.cache_clear()


def test_provenance_fields_in_this_checkout():
    p = prov.provenance(["prog", "--flag"])
    assert set(p) == {"git", "pkd_jax", "packages", "device", "command", "time", "host"}
    assert (
        SHA.match(p["git"]["commit"]) and isinstance(p["git"]["dirty"], bool) and p["git"]["reason"] is None
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert p["git"]["commit"] == head
    assert p["pkd_jax"] == importlib.metadata.version("pkd_jax")
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "ott-jax"):
        assert p["packages"][name] == importlib.metadata.version(name), name
    assert p["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(p["packages"]) == {*prov.PACKAGES, "python"}
    assert p["device"]["platform"] == "cpu" and p["device"]["kind"] and p["device"]["count"] >= 1
    assert p["device"]["local_count"] >= 1 and p["device"]["process_count"] == 1
    assert p["command"] == ["prog", "--flag"] and prov.provenance()["command"] == sys.argv
    when = datetime.datetime.strptime(p["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 60
    assert isinstance(p["host"], str) and p["host"]
    json.dumps(p)  # serialisable
    p["packages"]["jax"] = "changed"  # a copy: the cached part is not changed by a caller
    assert prov.provenance()["packages"]["jax"] == importlib.metadata.version("jax")


def test_provenance_never_imports_librosa():
    code = "import sys, pkd_jax.provenance as p; p.provenance(); print('librosa' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_git_state_outside_a_checkout_is_null_with_a_reason(tmp_path, monkeypatch, fresh_git_state):
    monkeypatch.setattr(prov, "PACKAGE_DIR", tmp_path)
    git = prov.provenance()["git"]
    assert git["commit"] is None and git["dirty"] is None and "not a git checkout" in git["reason"]
    # A package inside someone else's repository: that repository's commit is not pkd_jax's.
    (tmp_path / "repo" / "site" / "pkd_jax").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    monkeypatch.setattr(prov, "PACKAGE_DIR", tmp_path / "repo" / "site" / "pkd_jax")
    git = prov.provenance()["git"]
    assert git["commit"] is None and "is not the package of the git checkout" in git["reason"]
    # No git at all.
    prov._git_state.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert prov.provenance()["git"] == {"commit": None, "dirty": None, "reason": "git is not installed"}


def test_footers():
    p = prov.provenance()
    p["git"] = {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True, "reason": None}
    p["time"], p["device"] = "2026-01-02T03:04:05Z", {"kind": "NVIDIA H200", "count": 8}
    footer = prov.provenance_footer(p)
    assert "`0123456789ab+dirty`" in footer and "2026-01-02" in footer and "NVIDIA H200 x 8" in footer
    assert f"jax {p['packages']['jax']}" in footer and f"flax {p['packages']['flax']}" in footer
    assert footer.count("\n") == 0
    p["git"] = {"commit": None, "dirty": None, "reason": "git is not installed"}
    assert "no git commit (git is not installed)" in prov.provenance_footer(p)
    current = prov.provenance()
    runs = [{"provenance": current}, {"provenance": p}, {"provenance": p}, {"raw": {}}]
    lines = prov.provenance_lines(current, runs)
    assert lines[0] == prov.provenance_footer(current)
    assert "2 at `no git commit (git is not installed)`" in lines[-1]
    assert prov.provenance_lines(current, runs[:1]) == [prov.provenance_footer(current)]


def test_amendments_carry_provenance_and_configs_read_back_without_it(tmp_path):
    config = defaults.get_config("visual", "recola")
    record_config(config, tmp_path)
    assert read_provenance(tmp_path / "config.json")["git"] == prov.provenance()["git"]
    assert "provenance" not in read_config(tmp_path / "config.json")
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    config.train.num_steps = 50
    assert record_config(config, tmp_path) == ["train.num_steps"]
    (amendment,) = [json.loads(line) for line in (tmp_path / AMENDMENTS_NAME).read_text().splitlines()]
    assert amendment["changes"] == {"train.num_steps": [20_000, 50]}
    assert amendment["provenance"]["git"] == prov.provenance()["git"]
    assert config_changes(read_config(tmp_path / "config.json"), config) == {}


def test_a_workdir_recorded_before_a_value_was_renamed_reads_with_the_new_name(tmp_path):
    config = defaults.get_config("student", "recola")
    record_config(config, tmp_path)
    recorded = json.loads((tmp_path / "config.json").read_text())
    recorded["loss"]["distill"] = "flattened"  # the released code's cosine, before "flattened_cosine"
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert read_config(tmp_path / "config.json").loss.distill == "flattened_cosine"


def test_trained_workdir_records_provenance_and_a_model_card(teacher_dir):
    here = prov.provenance()
    recorded = json.loads((teacher_dir / "config.json").read_text())
    evaluation = json.loads((teacher_dir / "eval.json").read_text())
    for p in (recorded["provenance"], evaluation["provenance"]):
        assert p["git"] == here["git"] and SHA.match(p["git"]["commit"])
        for name in ("jax", "flax", "orbax-checkpoint", "grain", "numpy"):
            assert p["packages"][name] == here["packages"][name], name
        assert (
            p["device"]["kind"] == here["device"]["kind"] and p["device"]["count"] == here["device"]["count"]
        )
        assert p["command"][0] == "pkd_jax.main" and f"--workdir={teacher_dir}" in p["command"]
    assert read_provenance(teacher_dir / "config.json") == recorded["provenance"]
    config = read_config(teacher_dir / "config.json")
    assert "provenance" not in config and "provenance" not in config.to_dict()

    card = (teacher_dir / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: teacher")
    for kind in ("## Model", "## Training data", "## Training", "## Evaluation", "## Limits", "## Licences"):
        assert kind in card
    raw = evaluation["raw"]
    for target in ("valence", "arousal"):
        row = f"| {target} | {raw['mean_over_videos'][target]:.4f} | {raw['concatenated'][target]:.4f} |"
        assert row in card
    assert f"{evaluation['mean_ccc']:.4f}" in card and "### dev split (2 videos)" in card
    assert "Post-processed" not in card  # this run scored raw only
    assert "3 train, 2 dev, 0 test" in card and "step 6" in card
    assert "**Not real data**" in card  # the fake test cache
    assert "Apache-2.0" in card and "Kollias" in card and "University of Fribourg" in card
    assert f"`{prov.short_commit(here)}`" in card and f"jax {here['packages']['jax']}" in card
    assert "Parameters: " in card and "audio_cnn" in card


def test_model_card_of_a_synthetic_student_labels_post_processed_scores(tmp_path):
    config = defaults.get_config("student", "synthetic")
    config.teacher.workdir = "runs/teacher"
    scores = {
        "mean_over_videos": {"valence": 0.123456, "arousal": 0.5},
        "concatenated": {"valence": 0.2, "arousal": 0.3},
    }
    result = {
        "raw": {**scores, "per_video": {"a": {}, "b": {}, "c": {}}, "postprocessing": "raw"},
        "postprocessed": {
            "mean_over_videos": {"valence": 0.9, "arousal": 0.8},
            "concatenated": scores["concatenated"],
        },
        "mean_ccc": 0.311728,
        "score": "mean_over_videos",
    }
    videos = {
        f"v{i}": {"split": s, "status": "ok"} for i, s in enumerate(["train"] * 4 + ["dev"] * 3 + ["test"])
    }
    manifest = {
        "dataset": "synthetic",
        "config": {"face_size": 112, "fps": 25, "detector": "haar"},
        "videos": videos,
    }
    path = write_model_card(
        tmp_path, config, {"dev": result, "test": result}, manifest, prov.provenance(), step=7
    )
    card = path.read_text()
    assert path == tmp_path / "MODEL_CARD.md"
    assert "| valence | 0.1235 | 0.2000 |" in card and "| valence | 0.9000 | 0.2000 |" in card
    assert "Post-processed (released code's smoothing/scaling), not the headline:" in card
    assert card.index("Raw CCC (the headline)") < card.index("Post-processed")
    assert "### test split (3 videos)" in card and "4 train, 3 dev, 1 test" in card
    assert "**Not real data**: trained on a generated corpus (synthetic)" in card
    assert "needs only the face video at test time" in card and "Teacher: runs/teacher" in card
    assert "Gate: paper" in card and "detector haar" in card and "25 frames per second" in card
    assert "Weights trained on RECOLA or Aff-Wild2 are derived from licensed data" in card
