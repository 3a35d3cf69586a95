"""The lock file installs exactly what pyproject.toml asks for: a change to either alone fails here."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _from_pyproject() -> set[tuple]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set()
    groups = {None: project["dependencies"], **project.get("optional-dependencies", {})}
    for extra, requirements in groups.items():
        for text in requirements:
            r = Requirement(text)
            marker = f"extra == '{extra}'" if extra else (str(r.marker) if r.marker else None)
            wanted.add((_normal(r.name), str(r.specifier) or None, tuple(sorted(r.extras)), marker))
    return wanted


def _from_lock() -> tuple[set[tuple], dict]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (root,) = [p for p in lock["package"] if p["name"] == "pkd-jax"]
    locked = set()
    for r in root["metadata"]["requires-dist"]:
        spec = str(Requirement(f"x{r['specifier']}").specifier) if r.get("specifier") else None
        locked.add((_normal(r["name"]), spec, tuple(sorted(r.get("extras", []))), r.get("marker")))
    return locked, lock


def test_the_lock_was_resolved_from_this_pyproject():
    wanted, (locked, lock) = _from_pyproject(), _from_lock()
    assert wanted == locked, (
        f"pyproject.toml and uv.lock disagree (run `make lock`): only in pyproject {sorted(wanted - locked)}, "
        f"only in uv.lock {sorted(locked - wanted)}"
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert lock["requires-python"].replace(" ", "") == project["requires-python"].replace(" ", "")


def test_every_runtime_dependency_has_an_upper_bound_but_the_slow_ones():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    unbounded = [
        text for text in project["dependencies"] if not any(s.operator in ("<", "<=", "==", "~=")
        for s in Requirement(text).specifier)
    ]  # fmt: skip
    assert unbounded == ["flatbuffers>=24"], unbounded  # a serialization format, stable for years


def test_the_locked_stack_is_the_one_installed():
    from importlib.metadata import version

    _, lock = _from_lock()
    pinned = {_normal(p["name"]): p["version"] for p in lock["package"]}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "librosa", "torch"):
        assert version(name) == pinned[name], f"{name} {version(name)} installed, {pinned[name]} locked"
