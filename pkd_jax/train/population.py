"""Populations: the seeds of one method trained together, in one jitted program vmapped over members.

`train.population = S` (> 1) trains S members with seeds `train.population_seeds` (default `seed`,
`seed + 1`, ...). Each member is set up exactly as a single run of its seed (`setup.setup`: its own
initialisation, dropout key and clip stream, its teachers, gates and caches) in its own complete workdir
`<workdir>/seed_<s>`; the population then stacks the members' train states along a leading axis and
trains them with `jax.jit(jax.vmap(step))`, each member on its own batch and with its own gate
thresholds. Member s therefore follows the single run of seed s, to float rounding, and member s of one
method pairs with member s of every other (same seed, same clip stream, same initialisation of the
shared parts). A student's teacher given as a population workdir is read member by member
(`<teacher>/seed_<s>`); a single teacher workdir serves every member.

Each member's workdir is what a single run leaves (checkpoints with the input position, metrics,
predictions, eval.json, the model card), so `api.load`, `predict`, `export` and the teacher loader read it
as any other; `<workdir>/population.json` lists the members. Checkpoints are written member by member,
each after every member's previous one is on disk, keeping one more than `train.keep_latest`: after a
crash (kill -9) at any point, every member has the last step saved by all, and the population resumes
there exactly.

Placement (`layout`): with D > 1 devices in one process and S a multiple of D, members are spread over
the devices (no communication in the step); otherwise every device holds every member and each
member's batch is split over the devices, as in a single run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from pkd_jax import console, losses
from pkd_jax.config import build
from pkd_jax.train import sharding
from pkd_jax.train.evaluate import evaluate_population, population_stream_step
from pkd_jax.train.setup import Run, final_splits_present, setup, write_final, write_finished
from pkd_jax.train.steps import Batch, over_members
from pkd_jax.workdir.checkpoints import abstract_like
from pkd_jax.workdir.config_record import config_changes
from pkd_jax.workdir.metric_writer import MetricWriter
from pkd_jax.workdir.population_record import is_population_workdir

# What may differ between the members of one population: their seeds and the teachers they read.
MEMBER_FIELDS = ("seed", "teacher.workdir", "teacher.workdirs", "teacher.checkpoint")


def member_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The members' seeds: `train.population_seeds`, or `seed, seed + 1, ...` (`train.population` of them)."""
    return tuple(config.train.population_seeds) or tuple(
        config.seed + i for i in range(config.train.population)
    )


def member_dir(workdir: Path, seed: int) -> Path:
    """The workdir of the member with `seed`, inside a population workdir."""
    return workdir / f"seed_{seed}"


def member_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """The config of the member with `seed`: that seed, and a population teacher's member of that seed."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = seed
    if c.stage == "student" and c.teacher.mode != "joint":
        if c.teacher.workdir and is_population_workdir(c.teacher.workdir):
            c.teacher.workdir = str(member_dir(Path(c.teacher.workdir), seed))
        c.teacher.workdirs = tuple(
            str(member_dir(Path(w), seed)) if is_population_workdir(w) else w for w in c.teacher.workdirs
        )
    c.lock()
    return c


def check_members_agree(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """Members differ only in `MEMBER_FIELDS`: they share one network, loss and optimizer, hence one step."""
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"population members need distinct seeds; got {seeds}")
    for c in configs[1:]:
        differ = {k: v for k, v in config_changes(configs[0], c).items() if k not in MEMBER_FIELDS}
        if differ:
            raise ValueError(
                f"population members {configs[0].seed} and {c.seed} differ beyond their seeds and teachers: "
                + "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in differ.items())
            )


def stack(trees: Sequence[Any]) -> Any:
    """One pytree whose leaves stack the members' leaves along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member(tree: Any, m: int) -> Any:
    """Member m's slice of a stacked pytree."""
    return jax.tree.map(lambda x: x[m], tree)


def layout(members: int, mesh: jax.sharding.Mesh) -> str:
    """ "members": members over the devices (one process, S a multiple of D > 1); else "data": every
    device holds every member and the batch is split over devices within each member."""
    devices = mesh.devices.size
    if devices > 1 and members % devices == 0 and jax.process_count() == 1:
        return "members"
    return "data"


def place(tree: Any, mesh: jax.sharding.Mesh, how: str) -> Any:
    """A stacked pytree (state, teachers' variables) placed for `layout` `how`."""
    spec = PartitionSpec(sharding.DATA_AXIS) if how == "members" else PartitionSpec()
    if how == "members":
        return jax.device_put(tree, NamedSharding(mesh, spec))
    return sharding.replicate(tree, mesh)


def shard_population_batch(batch: Batch, mesh: jax.sharding.Mesh, how: str) -> dict[str, jax.Array]:
    """The numeric arrays of a stacked host batch [S, B, ...] as global arrays for `layout` `how`."""
    spec = PartitionSpec(sharding.DATA_AXIS) if how == "members" else PartitionSpec(None, sharding.DATA_AXIS)
    target = NamedSharding(mesh, spec)
    return {
        k: jax.make_array_from_process_local_data(target, np.asarray(v))
        for k, v in batch.items()
        if np.asarray(v).dtype.kind in "biuf" and np.ndim(v) > 1
    }


class PopulationBatches:
    """The members' input streams drawn together: each `next` stacks one batch of every member."""

    def __init__(self, streams: Sequence[Iterator[Batch]]):
        self.streams = list(streams)

    def __iter__(self) -> PopulationBatches:
        return self

    def __next__(self) -> Batch:
        batches = [next(s) for s in self.streams]
        return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}


class PopulationCheckpointer:
    """Saves each member's slice of the state, with its input position, in the member's workdir.

    Before a save, every member's previous save is waited for: a crash then leaves each member with
    the previous step at least, which its checkpointer keeps (one more than `train.keep_latest`).
    """

    def __init__(self, runs: Sequence[Run], streams: Sequence[Iterator[Batch]]):
        self.checkpointers = [r.checkpointer for r in runs]
        self.streams = list(streams)

    def save(self, step: int, state: Any, data_iterator: Any = None, *, dev_ccc: Any = None) -> None:
        for c in self.checkpointers:
            c.wait()  # type: ignore[attr-defined]
        for m, c in enumerate(self.checkpointers):
            score = None if dev_ccc is None else float(np.asarray(dev_ccc).reshape(-1)[m])
            c.save(step, member(state, m), self.streams[m], dev_ccc=score)

    def close(self) -> None:
        for c in self.checkpointers:
            c.close()


class PopulationWriter:
    """Writes each member's row of the population's metrics (arrays over members; a scalar, such as
    steps per second, is every member's) to its own writer."""

    def __init__(self, writers: Sequence[Any]):
        self.writers = list(writers)

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None:
        for m, w in enumerate(self.writers):
            w.write(
                step, {k: v if np.ndim(v) == 0 else np.asarray(v)[m] for k, v in scalars.items()}, kind=kind
            )

    def close(self) -> None:
        for w in self.writers:
            w.close()


def align_members(runs: list[Run]) -> tuple[list[Run], int]:
    """The members restored at one step: the newest step every member has a checkpoint of.

    A member ahead of it (the population was killed while saving) is restored there again, state and
    input position, and its newer checkpoints are deleted, so training repeats exactly what it lost.
    """
    starts = [r.start_step for r in runs]
    if len(set(starts)) == 1:
        return runs, starts[0]
    steps = [set(r.checkpointer.manager.all_steps()) for r in runs]  # type: ignore[attr-defined]
    common = set.intersection(*steps)
    if not common:
        listing = ", ".join(f"{r.workdir.name}: step {s}" for r, s in zip(runs, starts, strict=True))
        raise RuntimeError(
            f"population members are at different steps with no checkpoint in common ({listing}); "
            "resume each one alone (train.population=1) to the same step, or train them in new workdirs"
        )
    step = max(common)
    aligned = []
    for r in runs:
        if r.start_step != step:
            checkpointer: Any = r.checkpointer
            state = checkpointer.restore(step, abstract_like(r.state), r.batches, data_position=step)
            for newer in [s for s in checkpointer.manager.all_steps() if s > step]:
                checkpointer.manager.delete(newer)
            r.writer.close()
            writer = MetricWriter(r.workdir, resume_step=step, enabled=r.chief)
            logging.warning("%s: restored at step %d, the last step every member saved.", r.workdir, step)
            r = dataclasses.replace(r, state=state, start_step=step, writer=writer)
        aligned.append(r)
    return aligned, step


def setup_population(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[Path],
    record_dir: Path,
    loss_fn: losses.LossFn | None = None,
    allow_config_change: bool = False,
) -> Run:
    """One `Run` training every member: each set up as its single run, then stacked and vmapped."""
    runs = []
    for config, workdir in zip(configs, workdirs, strict=True):
        runs.append(
            setup(
                config, workdir, loss_fn=loss_fn, allow_config_change=allow_config_change, extra_checkpoints=1
            )
        )
    runs, start = align_members(runs)
    first = runs[0]
    assert first.step_for is not None and first.mesh is not None and first.cache is not None
    step_for, mesh, cache, model = first.step_for, first.mesh, first.cache, first.model
    count = len(runs)
    how = layout(count, mesh)
    logging.info("Population of %d members (seeds %s), layout %r.", count, [c.seed for c in configs], how)
    state = place(stack([sharding.local_view(r.state) for r in runs]), mesh, how)
    teacher_variables = place(stack([sharding.local_view(r.teachers.variables) for r in runs]), mesh, how)
    thetas = tuple(jnp.asarray([r.teachers.thetas[k] for r in runs]) for k in range(len(first.teachers)))

    def member_step(state: Any, batch: Batch, teacher_variables: Any, thetas: tuple[Any, ...]) -> Any:
        return step_for(thetas)(state, batch, teacher_variables)

    jitted = jax.jit(over_members(member_step), donate_argnums=0)

    def train_step(state: Any, batch: Batch) -> Any:
        return jitted(state, shard_population_batch(batch, mesh, how), teacher_variables, thetas)

    config = first.config
    targets, dtype = build.target_indices(config), build.compute_dtype(config)
    stream_step = population_stream_step(model, dtype)

    def eval_variables(state: Any) -> Any:
        return state.variables if how == "members" else sharding.local_view(state.variables)

    # Members share cached trunk features only when their frozen trunks are the same (a pretrained one).
    same_trunks = all(r.trunk_digests == first.trunk_digests for r in runs)
    eval_features = first.eval_features if same_trunks else None

    def evaluate(state: Any, step: int, split: str = "dev") -> dict[str, Any]:
        save = split == "dev" and config.eval.save_predictions and first.chief
        results = evaluate_population(
            model, eval_variables(state), cache, config, members=count, split=split, targets=targets,
            dtype=dtype, stream_step=stream_step, feature_arrays=eval_features,
            predictions_dirs=[r.workdir / "predictions" / str(step) if save else None for r in runs],
        )  # fmt: skip
        scores = [r["mean_ccc"] for r in results]
        return {"mean_ccc": float(np.mean(scores)), "member_ccc": scores, "members": results}

    def finish(state: Any, step: int, last_eval: dict[str, Any]) -> None:
        finals: list[dict[str, Any]] = [{} for _ in runs]
        for split in final_splits_present(config, cache):
            for m, result in enumerate(evaluate(state, step, split)["members"]):
                finals[m][split] = write_final(runs[m].workdir, split, result)
        if not first.chief:
            return
        for m, r in enumerate(runs):
            params = member(state.params, m)
            dev = last_eval["members"][m] if last_eval else {}
            write_finished(r.config, r.workdir, cache, r.teachers, params, step, dev, finals[m])

    console.say(
        f"population of {count}: seeds {', '.join(str(c.seed) for c in configs)}", to_console=first.chief
    )
    return Run(
        config=config, workdir=record_dir, model=model, state=state, start_step=start,
        batches=PopulationBatches([r.batches for r in runs]), train_step=train_step, evaluate=evaluate,
        finish=finish, checkpointer=PopulationCheckpointer(runs, [r.batches for r in runs]),
        writer=PopulationWriter([r.writer for r in runs]), chief=first.chief, mesh=mesh, cache=cache,
        teachers=first.teachers,
    )  # fmt: skip
