"""LICENSE and CITATION.cff agree with pyproject.toml, and the citation names the paper."""

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_citation_file_is_valid_and_cites_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "license"):
        assert cff[key], key
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"] == "Apache-2.0"
    (paper,) = cff["references"]
    assert (
        paper["title"] == "Privileged Knowledge Distillation for Dimensional Emotion Recognition in the Wild"
    )
    assert paper["year"] == 2023 and paper["authors"][0]["family-names"] == "Aslam"


def test_license_is_the_apache_license():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
