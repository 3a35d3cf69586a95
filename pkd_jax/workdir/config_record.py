"""A workdir's config cannot drift from its checkpoints.

A run writes `config.json` when it starts with no checkpoint. Once a checkpoint exists, config.json is
history and is never rewritten: a restart compares its config with the recorded one (config.json plus
the amendments so far, `workdir.read_config`) and

- bookkeeping fields (`BOOKKEEPING`: step counts, logging, checkpoint policy, evaluation batching) may
  change freely; each change is recorded; except `train.num_steps` under `optim.schedule="warmup_cosine"`,
  whose cosine ends at num_steps, so that a new count changes the learning rate of every later step;
- fields of the network (`stage`, `targets`, `model.*` but `model.dtype`, `data.face_size`) cannot
  change: the checkpoints hold another network;
- every other field (data, loss, optimizer, seed, teacher, ...) changes what is learned from the resumed
  step on: an error listing each field (old -> new) unless the run is given `allow_change`
  (`--allow_config_change`), and then recorded too.

Each recorded change is one line of `config_amendments.jsonl` with the step it applies from; `read_config`
applies them in order, so predict, export and a student's teacher loader see the config as it stands.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import sys
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from pkd_jax import defaults
from pkd_jax.cached import write_text_atomic
from pkd_jax.provenance import provenance

AMENDMENTS_NAME = "config_amendments.jsonl"  # changes made to a run's config when it was resumed
PROVENANCE_KEY = "provenance"  # config.json's record of what wrote it (`pkd_jax.provenance`), not a field


def read_config(path: Path) -> ml_collections.ConfigDict:
    """A workdir's config as it stands: config.json, then each recorded amendment, in order.

    config.json is the config the run started with and is never rewritten once the run has a
    checkpoint; a resume with changed fields appends them to `config_amendments.jsonl` beside it (see
    `pkd_jax.workdir.config_record`). Fields added to pkd_jax since the workdir was written get their
    defaults (`pkd_jax.defaults.get_config` of the saved stage and dataset), which keep the behaviour
    that existed before them, so older workdirs keep working. The `provenance` record is left out
    (`read_provenance`).
    """
    saved = _read_json(path)
    saved.pop(PROVENANCE_KEY, None)
    if "stage" not in saved or "data" not in saved:
        raise ValueError(f"{path}: not a pkd_jax training config (no stage or data fields)")
    if saved["stage"] not in defaults.STAGES:
        raise ValueError(f"{path}: unknown stage {saved['stage']!r}; expected one of {defaults.STAGES}")
    base = defaults.get_config(saved["stage"], saved["data"].get("dataset", "recola")).to_dict()
    config = _fill(base, saved)
    for amendment in read_amendments(path.parent):
        for field, (_, new) in amendment["changes"].items():
            _set_dotted(config, field, new, path.parent / AMENDMENTS_NAME)
    for (section, field), renames in RENAMED_VALUES.items():
        value = config.get(section, {}).get(field)
        if isinstance(value, str) and value in renames:
            config[section][field] = renames[value]
    return ml_collections.ConfigDict(config)


# Config values renamed since a workdir may have recorded them: (section, field) -> {old: new}.
RENAMED_VALUES = {("loss", "distill"): {"flattened": "flattened_cosine"}}


def read_provenance(path: Path) -> dict[str, Any] | None:
    """The `provenance` record of a config.json (`pkd_jax.provenance`), or None when it has none."""
    record = _read_json(path).get(PROVENANCE_KEY)
    return record if isinstance(record, dict) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a pkd_jax training config (no stage or data fields)")
    return saved


def read_amendments(workdir: Path) -> list[dict[str, Any]]:
    """The amendments recorded in `<workdir>/config_amendments.jsonl`, oldest first (none: [])."""
    path = Path(workdir) / AMENDMENTS_NAME
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from e
        if not isinstance(record, dict) or not isinstance(record.get("changes"), dict):
            raise ValueError(f"{path}, line {number}: not an amendment (no changes field)")
        records.append(record)
    return records


def _set_dotted(config: dict[str, Any], field: str, change: Any, source: Path) -> None:
    *parents, name = field.split(".")
    node: Any = config  # a sub-dict, or whatever else the path runs into
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or name not in node:
        raise ValueError(f"{source}: amends {field!r}, which is not a config field")
    node[name] = change


def _fill(base: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _fill(base[key], value) if both else value
    return out


# Changing these does not change what the network learns (only how long, how often it is logged,
# evaluated or saved, how evaluation is batched, and whether the seed trains alone or in a population,
# which agree to float rounding).
BOOKKEEPING = (
    "train.population",
    "train.population_seeds",
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_latest",
    "train.keep_best",
    "train.profile_steps",
    "data.preprocess_workers",
    "data.eval_chunk_frames",
    "data.eval_videos_per_batch",
    "data.eval_windows_per_batch",
    "eval.save_predictions",
    "eval.postprocess",
    "eval.final_splits",
)


def is_bookkeeping(field: str, *configs: ml_collections.ConfigDict) -> bool:
    """Whether changing `field` leaves what is learned alone under `configs` (recorded and new).

    `train.num_steps` is bookkeeping while the learning rate does not depend on it: with the
    "warmup_cosine" schedule the cosine is stretched to the new count, so the resumed steps see other
    rates than the recorded run would have (the schedule is that of the final num_steps).
    """
    if field == "train.num_steps":
        return all(c.optim.get("schedule", "step") == "step" for c in configs)
    return field in BOOKKEEPING


class ConfigChangeError(ValueError):
    """A restart's config differs from the workdir's in fields that may not change (listed)."""


def is_network_field(field: str) -> bool:
    """Whether `field` shapes the network, so that a checkpoint of another value cannot be resumed."""
    if field == "model.dtype":  # compute dtype only; parameters stay float32
        return False
    return field in ("stage", "targets", "data.face_size") or field.startswith("model.")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a.b": value}` of a nested dict, with values as JSON gives them back (tuples as lists)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value))
    return out


def config_changes(
    recorded: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
    """`{field: (recorded value, new value)}` for every field the two configs set differently."""
    old = flatten(recorded.to_dict())
    new = flatten(json.loads(config.to_json_best_effort()))
    return {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]}


def latest_checkpoint_step(workdir: Path) -> int | None:
    """The highest `checkpoints/<step>` directory of `workdir` (finished or not), or None."""
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps) if steps else None


def _listing(changes: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{field}: {old!r} -> {new!r}" for field, (old, new) in changes.items())


def check_not_teacher_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """A student trains in a workdir of its own, never in its teacher's."""
    if config.stage != "student":
        return
    teacher = config.teacher.workdir or ""
    if config.teacher.checkpoint:
        teacher = str(Path(config.teacher.checkpoint).parent.parent)
    if teacher and Path(teacher).resolve() == workdir.resolve():
        raise ConfigChangeError(
            f"{workdir} is the teacher's workdir: a student needs a workdir of its own "
            "(--workdir=runs/student), with config.teacher.workdir naming the teacher's"
        )


def record_config(
    config: ml_collections.ConfigDict, workdir: Path, *, allow_change: bool = False, write: bool = True
) -> list[str]:
    """Writes or checks `workdir`'s config before training; returns the fields amended (maybe none).

    Without a checkpoint, config.json (and any amendments) are replaced: the workdir holds no trained
    state yet. With one, see the module docstring. `write=False` (processes other than 0) checks only.
    config.json and each amendment carry this process's `provenance()` (read_config leaves it out).

    Raises:
      ConfigChangeError: listing each field that may not change (old -> new) and what to do.
    """
    path = workdir / "config.json"
    step = latest_checkpoint_step(workdir)
    if step is None or not path.is_file():
        if write:  # written whole, then renamed: other processes may be reading the previous one
            recorded = {**json.loads(config.to_json_best_effort()), PROVENANCE_KEY: provenance()}
            write_text_atomic(path, json.dumps(recorded, indent=2))
            (workdir / AMENDMENTS_NAME).unlink(missing_ok=True)
        return []
    previous = read_config(path)
    changes = config_changes(previous, config)
    network = {k: v for k, v in changes.items() if is_network_field(k)}
    if network:
        raise ConfigChangeError(
            f"{workdir} has checkpoints of another network ({path}): {_listing(network)}. These cannot "
            "change on resume: train in a new workdir"
        )
    restricted = {k: v for k, v in changes.items() if not is_bookkeeping(k, previous, config)}
    if restricted and not allow_change:
        raise ConfigChangeError(
            f"{workdir} has checkpoints (up to step {step}) trained with another config ({path}): "
            f"{_listing(restricted)}. Resume with the recorded values, or pass --allow_config_change "
            "(Python: allow_config_change=True) to continue from the checkpoint with the new ones "
            f"(recorded in {AMENDMENTS_NAME}), or train in a new workdir"
        )
    if changes and write:
        record = {
            "step": step,
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
            "changes": {k: list(v) for k, v in changes.items()},
            "command": list(sys.argv),
            PROVENANCE_KEY: provenance(),
        }
        with open(workdir / AMENDMENTS_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")
        logging.warning("Config amended from step %d (%s): %s", step, AMENDMENTS_NAME, _listing(changes))
    return list(changes)


def loss_name(fn: Any) -> str:
    """`module:qualname` of a user loss; a functools.partial or a callable object is named by its type."""
    qualname = None if isinstance(fn, functools.partial) else getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str):
        module, qualname = type(fn).__module__, type(fn).__qualname__
    return f"{module}:{qualname}"


def with_loss(config: ml_collections.ConfigDict, workdir: Path, loss_fn: Any) -> ml_collections.ConfigDict:
    """The config to record, `loss.custom` naming `loss_fn` (a copy; the caller's config is unchanged).

    A resumed workdir must train with the loss it started with: a config.json that names a user loss
    needs the same one (by name), and one that names none resumes only with the config's own loss.
    """
    given = loss_name(loss_fn) if loss_fn is not None else ""
    if loss_fn is None and config.loss.get("custom", ""):
        raise ValueError(
            f"config.loss.custom={config.loss.custom!r} but no loss function was given: the field is set "
            "by the Python API (pkd_jax.api.train(config, workdir, loss=fn)); pass that function"
        )
    if latest_checkpoint_step(workdir) is not None and (workdir / "config.json").is_file():
        recorded = read_config(workdir / "config.json").loss.get("custom", "")
        if recorded != given:
            trained = f"the user loss {recorded!r}" if recorded else "the config's own loss"
            now = f"the user loss {given!r}" if given else "no loss function"
            raise ValueError(
                f"{workdir} has checkpoints trained with {trained} (its config.json has loss.custom="
                f"{recorded!r}), but this run was given {now}; pass the same loss to resume, or train in a "
                "new workdir"
            )
    if loss_fn is None:
        return config
    config = copy.deepcopy(config)
    with config.unlocked():
        config.loss.custom = given
    return config
