"""`population.json`: the record of a population workdir, whose members are complete workdirs.

A population (`pkd_jax.train.population`) trains each seed in a workdir of its own; the record lists
them, with their seeds, the stage and what produced it. Tools that read one trained model (`api.load`,
`predict`, `export`, a student's teacher) take a member; given the population's directory, they say
which members it has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pkd_jax.cached import write_text_atomic
from pkd_jax.provenance import provenance

RECORD_NAME = "population.json"


def is_population_workdir(path: str | Path) -> bool:
    """Whether `path` holds a population's record."""
    return (Path(path) / RECORD_NAME).is_file()


def write_record(record_dir: Path, stage: str, seeds: Sequence[int], members: Sequence[Path]) -> None:
    """Writes (atomically) the record of a population of `stage` with these seeds and member workdirs."""
    record_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "stage": stage,
        "seeds": [int(s) for s in seeds],
        "members": [str(Path(m).resolve()) for m in members],
        "provenance": provenance(),
    }
    write_text_atomic(record_dir / RECORD_NAME, json.dumps(record, indent=2))


def read_members(record_dir: str | Path) -> list[str]:
    """The member workdirs a population record lists ([] when it cannot be read)."""
    try:
        return list(json.loads((Path(record_dir) / RECORD_NAME).read_text())["members"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def check_not_population(path: str | Path, what: str) -> None:
    """Raises ValueError when `path` is a population's directory, naming its members, for a tool that
    reads one trained model (`what`, e.g. "a teacher")."""
    if not is_population_workdir(path):
        return
    members = read_members(path)
    shown = ", ".join(members[:4]) + (", ..." if len(members) > 4 else "")
    raise ValueError(
        f"{path} is a population workdir ({RECORD_NAME}); {what} is one of its members: {shown or 'seed_<s>'}"
    )
