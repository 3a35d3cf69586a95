"""The paper runner end to end on a seconds-long configuration: runs, reuse, tables and figures."""

import json

from configs import demo
from pkd_jax.experiments import paper


def test_paper_runner_end_to_end_and_reuse(tmp_path):
    config = demo.get_config("smoke")
    config.unlock()
    # The shapes of the training tests, so their compiled programs are reused from the test cache.
    config.data.face_size, config.data.clip_frames, config.data.batch_size = 32, 4, 4
    config.data.preprocess_workers = 1
    results = paper.run_all(config, tmp_path)

    assert set(results["methods"]) == set(paper.METHODS)
    for method, stats in results["summary"].items():
        assert {"valence", "arousal"} <= set(stats), method
        assert all(abs(stats[t]["mean"]) <= 1 for t in ("valence", "arousal"))
        if method.startswith("student"):
            assert 0.0 <= stats["distilled_fraction"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    for heading in ("Table 1", "Table 3", "Table 4", "Table 5"):
        assert heading in table
    assert "27.82" in table  # the RECOLA-size student of Table 3
    assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [0]
    for png in ("figure4.png", "training_curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Started again, the runner reuses every finished run instead of training it again.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval.json")}
    assert len(stamps) == len(paper.METHODS)
    paper.run_all(config, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval.json")} == stamps


def test_recola_runner_config_needs_data_root(tmp_path):
    import pytest

    from configs import recola_paper

    config = recola_paper.get_config()
    assert config.model.vgg_width == 1.0 and config.experiment.seeds == (0, 1, 2)
    with pytest.raises(ValueError, match=r"data\.root is not set"):
        paper.run_all(config, tmp_path)
