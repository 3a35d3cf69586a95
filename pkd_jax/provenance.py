"""Where a result came from: the code (git commit), the library versions, the devices and the command.

`provenance()` is recorded in a workdir's `config.json`, `eval*.json`, `MODEL_CARD.md` and amendments,
in the paper runner's `results.json` / `results.md` and the gate sweep's `sweep.json` / `sweep.md`, in
`predict`'s `summary.json` and in the benchmarks' JSON lines (docs/provenance.md). It never fails the
caller: what cannot be found is null, with the reason.

The git state is the checkout `pkd_jax` is imported from (`Path(pkd_jax.__file__)`), not the working
directory; `dirty` is true when tracked files differ from the commit or the package directory holds files
git does not track (and does not ignore). The git and package parts are computed once per process.
"""

from __future__ import annotations

import copy
import datetime
import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pkd_jax

PACKAGE_DIR = Path(pkd_jax.__file__).resolve().parent  # the pkd_jax package directory
GIT_TIMEOUT_S = 5.0
# Reported as `packages` (distribution names, as importlib.metadata knows them); missing ones are null.
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "numpy",
    "librosa",
    "opencv-python-headless",
    "ott-jax",
)


def _git(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # never write the index of a checkout
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
    )
    if done.returncode:
        raise RuntimeError((done.stderr.strip().splitlines() or [f"git exited with {done.returncode}"])[-1])
    return done.stdout.strip()


@functools.lru_cache(maxsize=8)
def _git_state(package_dir: Path) -> dict[str, Any]:
    """`{"commit", "dirty", "reason"}` of the checkout holding `package_dir` (nulls with a reason)."""
    unknown = {"commit": None, "dirty": None}
    if not package_dir.is_dir():
        return {**unknown, "reason": f"{package_dir} is not a directory"}
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], package_dir)).resolve()
        if top / package_dir.name != package_dir:  # e.g. a site-packages inside someone else's repository
            return {
                **unknown,
                "reason": f"pkd_jax at {package_dir} is not the package of the git checkout {top}",
            }
        commit = _git(["rev-parse", "--verify", "HEAD"], top)
        changed = _git(["status", "--porcelain", "--untracked-files=no"], top)
        new = _git(["ls-files", "--others", "--exclude-standard", "--", package_dir.name], top)
        dirty = bool(changed or new)
    except FileNotFoundError:
        return {**unknown, "reason": "git is not installed"}
    except subprocess.TimeoutExpired:
        return {**unknown, "reason": f"git did not answer within {GIT_TIMEOUT_S:g} s"}
    except (RuntimeError, OSError) as e:
        return {**unknown, "reason": f"not a git checkout ({package_dir}): {e}"}
    return {"commit": commit, "dirty": dirty, "reason": None}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _packages() -> dict[str, str | None]:
    versions = {name: _version(name) for name in PACKAGES}
    if versions["opencv-python-headless"] is None and "cv2" in sys.modules:  # another OpenCV build
        versions["opencv-python-headless"] = getattr(sys.modules["cv2"], "__version__", None)
    versions["python"] = platform.python_version()
    return versions


def _pkd_jax_version() -> str | None:
    return _version("pkd_jax") or getattr(pkd_jax, "__version__", None)


def _device() -> dict[str, Any]:
    try:
        import jax

        first = jax.devices()[0]
        return {
            "platform": first.platform,
            "kind": first.device_kind,
            "count": jax.device_count(),
            "local_count": jax.local_device_count(),
            "process_count": jax.process_count(),
        }
    except Exception as e:  # no backend: provenance must not stop the caller
        fields = dict.fromkeys(("platform", "kind", "count", "local_count", "process_count"))
        return {**fields, "reason": f"{type(e).__name__}: {e}"}


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What produced a result, as a JSON-serialisable dict (a fresh copy on every call).

    Returns:
      `git` ({commit: full sha, dirty: bool, reason: null or why the others are null}), `pkd_jax` (its
      version), `packages` ({distribution: version or null}, plus `python`), `device` ({platform, kind,
      count, local_count, process_count} of JAX's devices), `command` (`argv`, by default `sys.argv`),
      `time` (ISO 8601, UTC) and `host`.
    """
    return {
        "git": copy.deepcopy(_git_state(PACKAGE_DIR)),
        "pkd_jax": _pkd_jax_version(),
        "packages": dict(_packages()),
        "device": _device(),
        "command": list(sys.argv if argv is None else argv),
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
    }


def short_commit(p: Mapping[str, Any]) -> str:
    """`1a2b3c4d5e6f` (+dirty) of a provenance record, or `no git commit (<reason>)`."""
    git = p.get("git") or {}
    if not git.get("commit"):
        return f"no git commit ({git.get('reason') or 'unknown'})"
    return git["commit"][:12] + ("+dirty" if git.get("dirty") else "")


def provenance_footer(p: Mapping[str, Any]) -> str:
    """A one-line Markdown footer of a provenance record: commit, versions, devices, date."""
    packages = p.get("packages") or {}
    device = p.get("device") or {}
    devices = f"{device.get('kind') or 'unknown device'} x {device.get('count') or '?'}"
    date = (p.get("time") or "")[:10] or "unknown date"
    return (
        f"_Generated by pkd_jax {p.get('pkd_jax') or '?'} at commit `{short_commit(p)}`, "
        f"jax {packages.get('jax') or '?'}, flax {packages.get('flax') or '?'}, on {devices}, {date}._"
    )


def provenance_lines(current: dict[str, Any], runs: Sequence[dict[str, Any]]) -> list[str]:
    """The footer of a report: this invocation's provenance, then the runs whose own eval files record
    another commit (trained by an earlier invocation, say), counted per commit."""
    here = short_commit(current)
    others: dict[str, int] = {}
    for run in runs:
        if "provenance" in run and (commit := short_commit(run["provenance"])) != here:
            others[commit] = others.get(commit, 0) + 1
    lines = [provenance_footer(current)]
    if others:
        listed = ", ".join(f"{n} at `{c}`" for c, n in others.items())
        lines += ["", f"_Reused results from other commits (per eval file): {listed}._"]
    return lines
