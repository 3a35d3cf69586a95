"""Seeds per hour: S seeds of one method trained in one vmapped program, against S runs one after another
and against PyTorch eager (`python -m pkd_jax.bench --what=population`).

One *seed* is what a training run costs before any evaluation: build the network and initialise it from
the seed, then `seed_steps` optimizer steps on a batch of the config's shapes with random content
(`train_step.random_batch`, drawn from the seed, so no two seeds share inputs; already on the device),
compilation included as a user pays it. Evaluation, checkpoints and the input pipeline are excluded.

- population S: one jitted step vmapped over S train states stacked along a leading member axis, as
  training's populations run it (`steps.over_members`: on CPU, convolutions as im2col products), member s initialised from seed s (the variables of `build.init_variables(model, batch_s, s)`, its
  program compiled once) with the dropout key `jax.random.key(s)`; timed from building the network to the
  last step's `block_until_ready`. Seeds/hour = S x 3600 / seconds.
- sequential: seeds one after another, as the runner trains them; the first compiles the initialisation
  and the train step, the later ones reuse both (sequential's best case). `sequential_seeds` seeds are
  timed per round; S seeds take first + (S - 1) x the mean later seed.
- torch: PyTorch eager with the reference networks, loss and per-module Adam of
  `pkd_jax.testing.torch_train` at the config's sizes, `torch.manual_seed(s)`, on the CPU (also on a GPU
  machine), a thread per core unless `torch_threads` says otherwise; S seeds take S x the mean seed.
  Its threads wait for each other by spinning: while another process held one of two cores, two threads
  ran the demo's step 50 times slower than one (docs/benchmarks.md).

Every timing builds its network, closures and jitted functions anew, so no compiled program passes from
one to another (JAX's in-process caches key on the function objects), and JAX's persistent compilation
cache is off. An untimed initialisation (and PyTorch step) first warms the process. Rounds run the arms in
alternating order so the machine's noise hits them alike; each arm reports its median over rounds, the
build (network, initialisation and its compile, optimizer state), the step's compile and the steps apart.
`member_differences` checks that member s of a population trains what a single run from seed s does.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pkd_jax.config import build
from pkd_jax.models.inputs import model_inputs
from pkd_jax.perf.train_step import FROZEN_KINDS, KINDS, _stage_config, base_kind, random_batch
from pkd_jax.train.state import TrainState, create_state, make_optimizer
from pkd_jax.train.steps import make_train_step, over_members

# A student on trainable trunks, its teacher's outputs cached (the demo trains `student_frozen`).
DEFAULT_KIND = "student_cached"
TORCH_KINDS = ("teacher", "visual", "student_online", "student_cached")  # what `TorchStep` trains
Batch = dict[str, np.ndarray]
INPUTS = ("frames", "audio", "physio")  # the batch keys the network reads


@dataclasses.dataclass(frozen=True)
class Method:
    """One fresh build of a step kind's training: its stage's config, network and frozen teacher (the
    online student's, shared by every seed), and an initialiser compiled once for every seed."""

    kind: str
    config: ml_collections.ConfigDict
    model: Any
    init: Callable[[int, Batch], dict[str, Any]]  # (seed, batch) -> variables
    teachers: tuple = ()
    teacher_variables: tuple = ()

    def optimizer(self, params: Any) -> optax.GradientTransformation:
        """The per-module Adam; it depends only on the parameters' tree, so every seed shares it."""
        return make_optimizer(
            self.config.optim, params, total_steps=self.config.train.num_steps,
            frozen_groups=build.frozen_trunks(self.config),
        )  # fmt: skip

    def train_step(self, tx: optax.GradientTransformation) -> Callable:
        """The unjitted `train_step(state, batch, teacher_variables)` of `steps.make_train_step`."""
        mode = base_kind(self.kind).split("_")[1] if self.config.stage == "student" else None
        return make_train_step(
            self.model, tx, build.build_loss(self.config), targets=build.target_indices(self.config),
            dtype=build.compute_dtype(self.config), teachers=self.teachers, teacher_mode=mode,
        )  # fmt: skip


def build_method(config: ml_collections.ConfigDict, kind: str, example: Batch) -> Method:
    """`kind`'s network built anew (as `train_step.build_train` configures it) from a batch of its shapes."""
    stage = "student" if kind.startswith("student") else base_kind(kind)
    c = _stage_config(config, stage)
    if kind in FROZEN_KINDS:
        c.model.freeze_visual_cnn = c.model.freeze_audio_cnn = True
        c.model.frozen_features = "cached"
    model = build.build_model(c)
    # `build.init_variables`' program with the example's inputs as arguments, so one compile serves all seeds.
    init_fn = jax.jit(lambda key, *inputs: model.init(key, *inputs))
    # A frozen kind's batch carries trunk features: the inputs' shapes come from its base kind's batch.
    shaped = (
        example if "frames" in example else random_batch(config, base_kind(kind), n_mels=64, audio_frames=100)
    )

    def init(seed: int, batch: Batch) -> dict[str, Any]:
        one = {k: v[:1] for k, v in (batch if "frames" in batch else shaped).items() if k in INPUTS}
        return init_fn(jax.random.key(seed, impl="rbg"), *model_inputs(model, one, jnp.float32))

    teachers: tuple = ()
    teacher_variables: tuple = ()
    if kind == "student_online":
        teacher = build.build_teacher(_stage_config(config, "teacher"))
        teachers, teacher_variables = (teacher,), (build.init_variables(teacher, example, 1),)
    return Method(kind, c, model, init, teachers, teacher_variables)


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of equal structure stacked along a new leading (member) axis; typed PRNG keys too."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of one timed run: build (network, initialisation and its compile, optimizer state, the
    batch on the device), the train step's compile, and the optimizer steps."""

    build_s: float
    compile_s: float
    steps_s: float

    @property
    def total_s(self) -> float:
        return self.build_s + self.compile_s + self.steps_s


def train_population(
    config: ml_collections.ConfigDict, kind: str, seeds: Sequence[int], batches: Sequence[Batch], steps: int
) -> tuple[TrainState, Timing]:
    """`steps` steps of one vmapped program over the members `seeds`, member i on `batches[i]`."""
    start = time.perf_counter()
    method = build_method(config, kind, batches[0])
    variables = [method.init(s, b) for s, b in zip(seeds, batches, strict=True)]
    tx = method.optimizer(variables[0]["params"])
    state = stack([create_state(v, tx, jax.random.key(s)) for s, v in zip(seeds, variables, strict=True)])
    batch = stack(batches)
    step = jax.jit(over_members(method.train_step(tx), in_axes=(0, 0, None)), donate_argnums=0)
    jax.block_until_ready((state, batch))
    built = time.perf_counter()
    compiled = step.lower(state, batch, method.teacher_variables).compile()
    compiled_at = time.perf_counter()
    for _ in range(steps):
        state, _ = compiled(state, batch, method.teacher_variables)
    jax.block_until_ready(state)
    return state, Timing(built - start, compiled_at - built, time.perf_counter() - compiled_at)


def train_sequential(
    config: ml_collections.ConfigDict, kind: str, seeds: Sequence[int], batches: Sequence[Batch], steps: int
) -> list[Timing]:
    """The seeds one after another, `steps` steps each; the first builds and compiles, the others reuse."""
    timings = []
    method, tx, compiled = None, None, None
    for seed, batch in zip(seeds, batches, strict=True):
        start = time.perf_counter()
        method = method or build_method(config, kind, batch)
        variables = method.init(seed, batch)
        tx = tx or method.optimizer(variables["params"])
        state = create_state(variables, tx, jax.random.key(seed))
        device_batch = jax.device_put(batch)
        jax.block_until_ready((state, device_batch))
        built = compiled_at = time.perf_counter()
        if compiled is None:
            step = jax.jit(method.train_step(tx), donate_argnums=0)
            compiled = step.lower(state, device_batch, method.teacher_variables).compile()
            compiled_at = time.perf_counter()
        for _ in range(steps):
            state, _ = compiled(state, device_batch, method.teacher_variables)
        jax.block_until_ready(state)
        timings.append(Timing(built - start, compiled_at - built, time.perf_counter() - compiled_at))
    return timings


def train_torch(
    config: ml_collections.ConfigDict, kind: str, seeds: Sequence[int], batches: Sequence[Batch], steps: int,
    threads: int = 0,
) -> list[Timing]:  # fmt: skip
    """The seeds one after another in PyTorch eager on `threads` threads (0: one per core); no compile:
    `compile_s` is 0."""
    import torch

    from pkd_jax.testing.torch_train import TorchStep

    torch.set_num_threads(threads or os.cpu_count() or 1)
    timings = []
    for seed, batch in zip(seeds, batches, strict=True):
        start = time.perf_counter()
        step = TorchStep(config, kind, batch, seed=seed)
        built = time.perf_counter()
        for _ in range(steps):
            step()
        timings.append(Timing(built - start, 0.0, time.perf_counter() - built))
    return timings


def member_batches(
    config: ml_collections.ConfigDict, kind: str, count: int, *, n_mels: int = 64, audio_frames: int = 100
) -> list[Batch]:
    """Seed s's batch for s = 0 .. count - 1: `random_batch`'s shapes, content drawn from seed s."""
    return [
        random_batch(config, kind, n_mels=n_mels, audio_frames=audio_frames, seed=s) for s in range(count)
    ]


def member_differences(
    config: ml_collections.ConfigDict, kind: str = DEFAULT_KIND, *, members: int = 2, steps: int = 2
) -> list[float]:
    """Per member s of a population trained `steps` steps: its distance from a separate run from seed s on
    the same batch (initialised by `build.init_variables`, trained by a plain `jax.jit(train_step)`), as
    the largest difference over the parameters divided by the largest change training made to them
    (and the same for the BatchNorm statistics; the larger of the two).

    The vmapped convolutions sum in another order; Adam's normalised update turns that float noise in a
    few gradient entries into differences of a few 1e-6 after 2 steps at learning rate 1e-3 (more than an
    element-wise rtol of 1e-5 allows), about 1e-3 of this ratio. A member trained from another seed,
    batch or dropout key is off by the order of 1.
    """
    batches = member_batches(config, kind, members)
    population, _ = train_population(config, kind, range(members), batches, steps)
    method = build_method(config, kind, batches[0])
    tx, step = None, None
    ratios = []
    for s, batch in enumerate(batches):
        init = build.init_variables(method.model, batch, s) if "frames" in batch else method.init(s, batch)
        tx = tx or method.optimizer(init["params"])
        step = step or jax.jit(method.train_step(tx))
        state = create_state(init, tx, jax.random.key(s))
        for _ in range(steps):
            state, _ = step(state, jax.device_put(batch), method.teacher_variables)
        member = jax.tree.map(lambda x, s=s: x[s], population)
        ratio = 0.0
        for name in ("params", "batch_stats"):  # each against its own scale of change
            leaves = [
                jax.tree.leaves(t) for t in (getattr(member, name), getattr(state, name), init.get(name, {}))
            ]
            diff = max((float(np.max(np.abs(a - b))) for a, b, _ in zip(*leaves, strict=True)), default=0.0)
            moved = max((float(np.max(np.abs(b - c))) for _, b, c in zip(*leaves, strict=True)), default=0.0)
            ratio = max(ratio, diff / moved if moved else diff)
        ratios.append(ratio)
    return ratios


def _median(timings: Sequence[Timing]) -> dict[str, float]:
    """Median seconds of each part and of the total over rounds."""
    return {
        f"{part}_s": statistics.median(getattr(t, f"{part}_s") for t in timings)
        for part in ("build", "compile", "steps", "total")
    }


def _mean(timings: Sequence[Timing]) -> Timing:
    return Timing(*(statistics.fmean(getattr(t, f) for t in timings) for f in ("build_s", "compile_s", "steps_s")))  # fmt: skip


def benchmark(
    config: ml_collections.ConfigDict,
    kinds: Sequence[str],
    *,
    population: Sequence[int],
    seed_steps: int,
    rounds: int,
    torch: bool = True,
    torch_threads: int = 0,
    sequential_seeds: int = 4,
    n_mels: int = 64,
    audio_frames: int = 100,
) -> list[dict[str, Any]]:
    """One result per kind and population size: each arm's median seconds, seeds/hour and the ratios."""
    if unknown := set(kinds) - set(KINDS):
        raise ValueError(f"unknown step kinds {sorted(unknown)}; choose among {KINDS}")
    if min(population, default=0) < 1 or seed_steps < 1 or rounds < 1 or sequential_seeds < 2:
        raise ValueError("need population sizes >= 1, seed_steps >= 1, rounds >= 1 and sequential_seeds >= 2")
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is paid, as on a new machine
    results = []
    for kind in kinds:
        count = max(*population, sequential_seeds)
        batches = member_batches(config, kind, count, n_mels=n_mels, audio_frames=audio_frames)
        threads = torch_threads if torch and kind in TORCH_KINDS else None
        timed = _rounds(config, kind, batches, population, seed_steps, rounds, sequential_seeds, threads)
        results += _summarize(config, kind, population, seed_steps, rounds, sequential_seeds, timed)
    return results


def _rounds(
    config: ml_collections.ConfigDict, kind: str, batches: list[Batch], population: Sequence[int],
    seed_steps: int, rounds: int, sequential_seeds: int, torch_threads: int | None,
) -> dict[str, list[Any]]:  # fmt: skip
    """Each arm's timings, one per round, the arms' order alternating between rounds; PyTorch's on
    `torch_threads` threads (0: one per core), none when None."""
    seeds = range(sequential_seeds)

    def members(size: int) -> Timing:
        return train_population(config, kind, range(size), batches[:size], seed_steps)[1]

    runs: dict[str, Callable[[], Any]] = {
        f"population_{s}": functools.partial(members, s) for s in population
    }
    runs["sequential"] = lambda: train_sequential(config, kind, seeds, batches[: len(seeds)], seed_steps)
    if torch_threads is not None:
        runs["torch"] = lambda: train_torch(config, kind, seeds, batches[: len(seeds)], seed_steps, torch_threads)  # fmt: skip
    _warm_up(config, kind, batches[0], torch_threads)
    timed: dict[str, list[Any]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            timed[name].append(runs[name]())
    return timed


def _warm_up(config: ml_collections.ConfigDict, kind: str, batch: Batch, torch_threads: int | None) -> None:
    """Untimed: the process's one-time costs (JAX's backend, its first lowering and compile, the optimizer
    state's eager kernels, PyTorch's thread pool and kernels) fall on no arm; no train step is compiled."""
    method = build_method(config, kind, batch)
    variables = method.init(0, batch)
    jax.block_until_ready(
        stack([create_state(variables, method.optimizer(variables["params"]), jax.random.key(0))])
    )
    if torch_threads is not None:
        train_torch(config, kind, [0], [batch], 1, torch_threads)


def _summarize(
    config: ml_collections.ConfigDict, kind: str, population: Sequence[int], seed_steps: int, rounds: int,
    sequential_seeds: int, timed: dict[str, list[Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    """The result rows of one kind: S sequential seeds from the first and later seeds, PyTorch's from one."""
    first = _median([seeds[0] for seeds in timed["sequential"]])
    later = _median([_mean(seeds[1:]) for seeds in timed["sequential"]])
    torch_seed = _median([_mean(seeds) for seeds in timed["torch"]]) if "torch" in timed else None
    common = {
        "what": "population", "kind": kind, "seed_steps": seed_steps, "rounds": rounds,
        "sequential_timed_seeds": sequential_seeds, "batch_clips": config.data.batch_size,
        "clip_frames": config.data.clip_frames, "face_size": config.data.face_size, "dtype": config.model.dtype,
        "platform": jax.devices()[0].platform, "devices": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }  # fmt: skip
    if torch_seed is not None:
        import torch

        common["torch_version"], common["torch_threads"] = torch.__version__, torch.get_num_threads()
    rows = []
    for s in population:
        pop = _median(timed[f"population_{s}"])
        pop["seeds_per_hour"] = s * 3600 / pop["total_s"]
        seq_total = first["total_s"] + (s - 1) * later["total_s"]
        row = {
            **common,
            "members": s,
            "population": pop,
            "sequential": {"total_s": seq_total, "seeds_per_hour": s * 3600 / seq_total,
                           "first_seed": first, "later_seed": later},
            "torch": None,
        }  # fmt: skip
        row["population_over_sequential"] = pop["seeds_per_hour"] / row["sequential"]["seeds_per_hour"]
        if torch_seed is not None:
            row["torch"] = {"total_s": s * torch_seed["total_s"], "seeds_per_hour": 3600 / torch_seed["total_s"],
                            "seed": torch_seed}  # fmt: skip
            row["population_over_torch"] = pop["seeds_per_hour"] / row["torch"]["seeds_per_hour"]
        rows.append(row)
    return rows


def format_table(results: list[dict[str, Any]]) -> str:
    """Seeds/hour per arm and population size, the ratios, then where each arm's seconds go."""
    header = (
        f"{'kind':15} {'S':>3} {'pop. s':>8} {'seeds/h':>8} {'seq. s':>8} {'seeds/h':>8} {'torch s':>8} "
        f"{'seeds/h':>8} {'pop/seq':>7} {'pop/torch':>9}"
    )
    rows = [header]
    for r in results:
        pop, seq, tor = r["population"], r["sequential"], r["torch"]
        torch_cols = f"{tor['total_s']:8.1f} {tor['seeds_per_hour']:8.0f}" if tor else f"{'-':>8} {'-':>8}"
        vs_torch = f"{r['population_over_torch']:9.2f}" if tor else f"{'-':>9}"
        rows.append(
            f"{r['kind']:15} {r['members']:3d} {pop['total_s']:8.1f} {pop['seeds_per_hour']:8.0f} "
            f"{seq['total_s']:8.1f} {seq['seeds_per_hour']:8.0f} {torch_cols} "
            f"{r['population_over_sequential']:7.2f} {vs_torch}"
        )
    if not results:
        return header
    r = results[0]
    rows.append(
        f"(seconds for S seeds of {r['seed_steps']} steps, medians of {r['rounds']} rounds; sequential and torch "
        f"S = from {r['sequential_timed_seeds']} seeds timed per round; {r['batch_clips']} clips x "
        f"{r['clip_frames']} frames at {r['face_size']}px, {r['dtype']}, {r['platform']}"
        + (f"; torch threads {r['torch_threads']})" if "torch_threads" in r else ")")
    )
    rows.append(f"{'median s':38} {'build':>7} {'compile':>8} {'steps':>7} {'per step':>9}")
    for kind in dict.fromkeys(r["kind"] for r in results):
        mine = [r for r in results if r["kind"] == kind]
        parts = [(f"{kind} population {r['members']}", r["population"]) for r in mine]
        parts += [(f"{kind} sequential, first seed", mine[0]["sequential"]["first_seed"]),
                  (f"{kind} sequential, later seed", mine[0]["sequential"]["later_seed"])]  # fmt: skip
        if mine[0]["torch"]:
            parts.append((f"{kind} torch, one seed", mine[0]["torch"]["seed"]))
        for name, t in parts:
            per_step = t["steps_s"] / mine[0]["seed_steps"]
            rows.append(
                f"{name:38} {t['build_s']:7.2f} {t['compile_s']:8.2f} {t['steps_s']:7.2f} {per_step:9.4f}"
            )
    return "\n".join(rows)
