"""The paper runner's library: methods x seeds trained into one workdir, then tables and figures.

The command line and the description of its outputs: `pkd_jax.experiments.paper`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from pkd_jax import console
from pkd_jax.experiments import plateau, report, report_paired
from pkd_jax.experiments.report_figures import figure4, training_curves
from pkd_jax.perf.complexity import complexity_table
from pkd_jax.provenance import provenance
from pkd_jax.workdir.config_record import latest_checkpoint_step

METHODS: dict[str, dict[str, Any]] = {
    "teacher": {"stage": "teacher"},
    "teacher_black": {"stage": "teacher", "data.missing_face": "black"},
    "visual": {"stage": "visual"},
    "student": {"stage": "student", "loss.gate": "paper"},
    "student_nogate": {"stage": "student", "loss.gate": "none"},
}
# The distillation terms of `pkd_jax.losses` beyond the paper's cosine, each a student with the paper gate
# (`configs/demo.py:distill` trains them all next to the cosine student under the same seeds).
DISTILL_METHODS = ("mse", "similarity", "rkd", "pkdot", "response")
METHODS.update(
    {
        f"student_{term}": {"stage": "student", "loss.gate": "paper", "loss.distill": term}
        for term in DISTILL_METHODS
    }
)
# The negative control (`configs/demo.py:controls`): the ungated student distilled from its teacher's
# outputs moved to another training recording, so the distillation term keeps its form and size but carries
# nothing about the student's own frames.
METHODS["student_shuffled"] = {"stage": "student", "loss.gate": "none", "teacher.shuffle": "recording"}
# The pipeline's positive control: a teacher that saw the labels of every training recording, so that its
# outputs on the recordings the student has no labels for are nearly the labels; a student that cannot
# gain from it has a broken distillation path.
METHODS["teacher_all_labels"] = {"stage": "teacher", "data.labelled_recordings": ()}
METHODS["student_all_labels_teacher"] = {
    "stage": "student", "loss.gate": "none", "_teachers": ("teacher_all_labels",),
}  # fmt: skip
# Its predictions as targets (squared error; per-clip CCC would see only an 8-frame clip's own variation).
METHODS["student_mse_all_labels_teacher"] = {
    "stage": "student", "loss.gate": "none", "loss.distill": "response_mse", "loss.alpha": 0.5,
    "_teachers": ("teacher_all_labels",),
}  # fmt: skip
# ... and its negative control: the same student of that teacher's outputs moved to another recording.
METHODS["student_mse_all_labels_shuffled"] = METHODS["student_mse_all_labels_teacher"] | {
    "teacher.shuffle": "recording"
}
# Beyond the paper (`configs/demo.py:beyond`): teachers with physiological signals, a student of two
# teachers, one-stage distillation. `_teachers` names the teacher run(s) a student distils from (default:
# "teacher"); the one-stage student trains its own (audio + visual) teacher in the same run.
PV, APV = ("physio", "visual"), ("audio", "visual", "physio")
METHODS.update(
    {
        "teacher_pv": {"stage": "teacher", "model.teacher_modalities": PV},
        "teacher_apv": {"stage": "teacher", "model.teacher_modalities": APV},
        "student_pv": {"stage": "student", "loss.gate": "paper", "_teachers": ("teacher_pv",)},
        "student_two": {"stage": "student", "loss.gate": "paper", "_teachers": ("teacher", "teacher_pv")},
        "student_onestage": {"stage": "student", "loss.gate": "none", "teacher.mode": "joint"},
    }
)


def method_config(
    base: ml_collections.ConfigDict, method: str, seed: int, workdir: Path
) -> ml_collections.ConfigDict:
    """The training config of one method and seed, derived from the experiment config."""
    config = ml_collections.ConfigDict(base.to_dict())
    spec = METHODS[method]
    for key, value in spec.items():
        if key.startswith("_"):
            continue
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    config.seed = seed
    if config.stage != "teacher" or "audio" not in config.model.teacher_modalities:
        # Only an audio teacher has the audio trunk an experiment-wide pretrained one is meant for.
        config.pretrained.audio_cnn = ""
        config.model.freeze_audio_cnn = False
    if config.stage == "student" and config.teacher.mode != "joint":
        teachers = tuple(str(run_dir(workdir, t, seed)) for t in spec.get("_teachers", ("teacher",)))
        config.teacher.workdir = teachers[0] if len(teachers) == 1 else ""
        config.teacher.workdirs = teachers if len(teachers) > 1 else ()
        config.teacher.checkpoint = ""
    config.eval.final_splits = final_splits(config)
    del config["experiment"]
    config.lock()
    return config


def run_dir(workdir: Path, method: str, seed: int) -> Path:
    """Where one method and seed trains and leaves its results."""
    return workdir / "runs" / method / f"seed_{seed}"


def final_splits(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """("test",) when the prepared cache has test videos, else (): the splits scored once, at the end."""
    from pkd_jax.data.cache import Cache

    if not config.data.cache or not (Path(config.data.cache) / "manifest.json").is_file():
        return ()  # not prepared (yet): nothing to score beyond dev
    return ("test",) if Cache(config.data.cache).ids("test") else ()


def gated(config: ml_collections.ConfigDict, method: str) -> bool:
    """Whether `method` is a student whose distillation a gate decides (so it may have gate diagnostics)."""
    return method.startswith("student") and METHODS[method].get("loss.gate", config.loss.gate) != "none"


def _warn_corpus_mismatch(root: Path, e: ml_collections.ConfigDict) -> None:
    """An existing synthetic corpus is reused as it is: say so when it was made with other counts."""
    meta = json.loads((root / "synthetic.json").read_text())
    if meta.get("ratings_from"):
        return  # ids and lengths come from rating files
    meta.setdefault("n_test", 0)  # corpora from before the test split have none
    wanted = {"n_train": e.corpus_train, "n_dev": e.corpus_dev, "n_test": e.get("corpus_test", 0),
              "seconds": e.corpus_seconds}  # fmt: skip
    differ = {k: (meta.get(k), v) for k, v in wanted.items() if meta.get(k) != v}
    if differ:
        logging.warning(
            "Reusing the synthetic corpus in %s, made with other settings (have, config): %s. Delete it "
            "(and the cache) to generate the configured one.", root, differ,
        )  # fmt: skip


def prepare_data(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """Generates (synthetic) and preprocesses the corpus when needed; returns the config pointing at it."""
    from pkd_jax.data import synthetic
    from pkd_jax.train.feature_cache import open_feature_cache

    config = ml_collections.ConfigDict(config.to_dict())
    e = config.experiment
    affwild2_layout = config.data.dataset == "affwild2" and e.get("corpus_layout") == "affwild2"
    if (config.data.dataset == "synthetic" or affwild2_layout) and not config.data.root:
        config.data.root = str(workdir / "corpus")
        n_test = e.get("corpus_test", 0)
        if affwild2_layout and n_test:
            raise ValueError("experiment.corpus_test: the Aff-Wild2 layout has no test split; set it to 0")
        if not (Path(config.data.root) / "synthetic.json").is_file():
            console.say(f"Generating the synthetic corpus in {config.data.root}.")
            generate = synthetic.generate_affwild2_corpus if affwild2_layout else synthetic.generate_corpus
            generate(
                config.data.root, e.corpus_train, e.corpus_dev, e.corpus_seconds, e.corpus_seed,
                config=synthetic.SyntheticConfig(
                    frame_width=e.corpus_frame_size, frame_height=e.corpus_frame_size,
                    physio=e.get("corpus_physio", True) and not affwild2_layout,
                ),
                workers=config.data.preprocess_workers, **({} if affwild2_layout else {"n_test": n_test}),
            )  # fmt: skip
        else:
            _warn_corpus_mismatch(Path(config.data.root), e)
    if not config.data.root:
        from pkd_jax.config.check import validate_config

        validate_config(config)  # stops with what to set
    if not config.data.cache:
        config.data.cache = str(workdir / "cache")
    open_feature_cache(config)  # preprocesses on first use
    return config


def with_pretrained_trunks(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """With `experiment.pretrain.visual`: the trunks pretrained on the separate face set
    (`pkd_jax.experiments.pretrain`), loaded and frozen, with cached features, by every method."""
    pretrain = config.experiment.get("pretrain")
    if pretrain is None or not pretrain.visual:
        return config
    from pkd_jax.experiments.pretrain import pretrain_trunks

    files = pretrain_trunks(config, workdir)
    config = ml_collections.ConfigDict(config.to_dict())
    for group, path in files.items():
        config.pretrained[group] = str(path)
        config.model[f"freeze_{group}"] = True  # never updated: the paper's lr 1e-6 / 1e-5, to the limit
    config.model.frozen_features = "cached"
    return config


def prepare_experiment(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """The config every run of an experiment in `workdir` shares: its corpus prepared (`prepare_data`) and
    its trunks pretrained when the config says so (`with_pretrained_trunks`)."""
    return with_pretrained_trunks(prepare_data(config, workdir), workdir)


def run_all(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (or reuses) every method for every seed and writes the reports.

    Each method's seeds train one after another, or with `experiment.population` > 1 as populations of
    up to that many members (`pkd_jax.train.population`), one program each.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache(workdir)
    start = time.perf_counter()
    config = prepare_experiment(config, workdir)
    seeds = tuple(config.experiment.seeds)
    methods = list(config.experiment.get("methods", tuple(METHODS)))
    if unknown := set(methods) - set(METHODS):
        raise ValueError(f"experiment.methods: unknown {sorted(unknown)}; choose from {list(METHODS)}")
    splits = final_splits(config)
    # evals[split][method][seed]: the final model's eval.json (dev) or eval_<split>.json.
    evals: dict[str, dict[str, dict[int, dict[str, Any]]]] = {
        s: {m: {} for m in methods} for s in ("dev", *splits)
    }
    for method in methods:  # a student's teachers are listed (and trained) before it
        for group in seed_groups(config, workdir, method, seeds, splits):
            train_group(config, workdir, method, group)
        for seed in seeds:
            out = run_dir(workdir, method, seed)
            files = {"dev": out / "eval.json", **{s: out / f"eval_{s}.json" for s in splits}}
            if not files["dev"].is_file():  # stopped by a signal after a checkpoint: resumable, not finished
                raise RuntimeError(
                    f"{out} stopped before its final evaluation; run the same command to resume"
                )
            if missing := [f.name for f in files.values() if not f.is_file()]:
                raise RuntimeError(
                    f"{out} finished without {missing}: the training loop did not score "
                    f"config.eval.final_splits={splits}"
                )
            for split, path in files.items():
                evals[split][method][seed] = json.loads(path.read_text())
    score = config.eval.score
    headline = "test" if "test" in splits else "dev"
    test = None
    if "test" in evals:
        test = {
            "methods": _by_seed_name(evals["test"]),
            "summary": report.summarize(evals["test"], scope=score),
        }
    gate_runs = [m for m in methods if gated(config, m)]
    results = {
        "config": json.loads(config.to_json_best_effort()),
        "seeds": list(seeds),
        "headline_split": headline,
        "methods": _by_seed_name(evals["dev"]),
        "summary": report.summarize(evals["dev"], workdir, scope=score),
        "test": test,
        "paired": {
            s: report_paired.paired_table(evals[s], scope=score) for s in dict.fromkeys((headline, "dev"))
        },
        "gate": report.gate_diagnostics(workdir, gate_runs, seeds),
        "gate_png": report.gate_figure(workdir, gate_runs, seeds, workdir / "gate.png"),
        "convergence": plateau.experiment_convergence(workdir, methods, seeds, score),
        "complexity": complexity_table(config),
        "runtime_s": time.perf_counter() - start,
        "provenance": provenance(),  # this invocation's; each run's eval carries its own
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "results.md").write_text(report.markdown(results))
    figure4(workdir, config, seeds[0], workdir / "figure4.png")
    training_curves(workdir, methods, seeds, workdir / "training_curves.png", report.LABELS, score)
    print(report.console_summary((workdir / "results.md").read_text()))
    return results


def seed_groups(
    config: ml_collections.ConfigDict,
    workdir: Path,
    method: str,
    seeds: tuple[int, ...],
    splits: tuple[str, ...],
) -> list[tuple[int, ...]]:
    """The seeds of `method` still to train, in populations of up to `experiment.population` members.

    A finished seed (its eval files all there) is reused. Members of one population must start from the
    same step, so unfinished seeds are grouped by their newest checkpoint first (all at 0 on a fresh run).
    """
    size = population_size(config.experiment.get("population", 1), len(seeds))
    by_start: dict[int, list[int]] = {}
    for seed in seeds:
        out = run_dir(workdir, method, seed)
        if (out / "eval.json").is_file() and all((out / f"eval_{s}.json").is_file() for s in splits):
            console.say(f"Reusing {out}.")
            continue
        by_start.setdefault(latest_checkpoint_step(out) or 0, []).append(seed)
    return [
        tuple(group[i : i + size])
        for _, group in sorted(by_start.items())
        for i in range(0, len(group), size)
    ]


def population_size(population: int, seeds: int) -> int:
    """Members per population: `experiment.population`, or for 0 ("auto") every seed at once on an
    accelerator and one at a time on a CPU, where a population trains fewer seeds per hour than runs
    one after another (docs/benchmarks.md, "Populations")."""
    if population < 0:
        raise ValueError(f"experiment.population={population}: 0 (auto), 1 (one after another) or more")
    if population == 0:
        import jax

        return seeds if jax.default_backend() != "cpu" else 1
    return population


def train_group(
    config: ml_collections.ConfigDict, workdir: Path, method: str, seeds: tuple[int, ...]
) -> None:
    """Trains (or resumes) `method` for `seeds`: one run, or one population of them (`pkd_jax.train.population`)."""
    from pkd_jax.train.loop import run, run_population

    configs = [method_config(config, method, seed, workdir) for seed in seeds]
    dirs = [run_dir(workdir, method, seed) for seed in seeds]
    logging.info("Training %s, seeds %s.", method, seeds)  # the console: the run's header, its path
    if len(seeds) == 1:
        run(configs[0], dirs[0])
    else:
        # The population's record (population.json, its lock) beside its members' seed_<s> workdirs.
        run_population(configs, dirs, workdir / "runs" / method / f"population_{seeds[0]}-{seeds[-1]}")


def _by_seed_name(runs: dict[str, dict[int, Any]]) -> dict[str, dict[str, Any]]:
    """JSON keys are strings: {method: {"0": result, ...}}."""
    return {m: {str(s): r for s, r in by_seed.items()} for m, by_seed in runs.items()}


def enable_compilation_cache(workdir: Path) -> None:
    """Methods and seeds share programs: compile each once, even across runner restarts."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the caller already chose one
        return
    jax.config.update("jax_compilation_cache_dir", str(workdir / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
