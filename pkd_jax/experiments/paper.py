"""The paper's experiments in one command: methods x seeds, then tables and figures.

    python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=runs/demo

With a synthetic config (`data.dataset = "synthetic"`, or `"affwild2"` with
`experiment.corpus_layout = "affwild2"` and no `data.root`) the corpus is generated into
`<workdir>/corpus` when absent; with RECOLA or Aff-Wild2, `data.root` names the corpus. The corpus is
preprocessed into the cache once.
Then, for every seed, it trains the methods of the paper's tables:

    teacher          audio + visual, missing faces filled with the last detected face (Table 5)
    teacher_black    the same with black frames where no face was found (Table 5)
    visual           the visual-only baseline (Tables 1, 3)
    student          PKD with the paper's gate (Tables 1, 4)
    student_nogate   PKD without the gate, eq. 4 (Table 4)

`experiment.methods` picks a subset; the strong setting (`configs/demo.py:strong`, Aff-Wild2 layout,
Table 6) runs teacher, visual, student and student_nogate and scores CCC over all dev frames.

Every run lives in `<workdir>/runs/<method>/seed_<k>`; a finished run (one with `eval.json`) is reused
when the runner is started again, an unfinished one resumes from its checkpoint. Scores are the raw dev
CCC at the last step (no model selection on the dev set; the student's teacher is the teacher run of
the same seed at its last step as well). Outputs: `results.json`, `results.md`, `figure4.png`,
`training_curves.png`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from pkd_jax.experiments import report

METHODS: dict[str, dict[str, Any]] = {
    "teacher": {"stage": "teacher"},
    "teacher_black": {"stage": "teacher", "data.missing_face": "black"},
    "visual": {"stage": "visual"},
    "student": {"stage": "student", "loss.gate": "paper"},
    "student_nogate": {"stage": "student", "loss.gate": "none"},
}


def method_config(
    base: ml_collections.ConfigDict, method: str, seed: int, workdir: Path
) -> ml_collections.ConfigDict:
    """The training config of one method and seed, derived from the experiment config."""
    config = ml_collections.ConfigDict(base.to_dict())
    for key, value in METHODS[method].items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    config.seed = seed
    if config.stage == "student":
        config.teacher.workdir = str(run_dir(workdir, "teacher", seed))
        config.teacher.checkpoint = ""
    del config["experiment"]
    config.lock()
    return config


def run_dir(workdir: Path, method: str, seed: int) -> Path:
    return workdir / "runs" / method / f"seed_{seed}"


def prepare_data(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """Generates (synthetic) and preprocesses the corpus when needed; returns the config pointing at it."""
    from pkd_jax.data import synthetic
    from pkd_jax.train.loop import open_cache

    config = ml_collections.ConfigDict(config.to_dict())
    e = config.experiment
    affwild2_layout = config.data.dataset == "affwild2" and e.get("corpus_layout") == "affwild2"
    if (config.data.dataset == "synthetic" or affwild2_layout) and not config.data.root:
        config.data.root = str(workdir / "corpus")
        if not (Path(config.data.root) / "synthetic.json").is_file():
            logging.info("Generating the synthetic corpus in %s.", config.data.root)
            generate = synthetic.generate_affwild2_corpus if affwild2_layout else synthetic.generate_corpus
            generate(
                config.data.root, e.corpus_train, e.corpus_dev, e.corpus_seconds, e.corpus_seed,
                config=synthetic.SyntheticConfig(frame_width=e.corpus_frame_size, frame_height=e.corpus_frame_size),
                workers=config.data.preprocess_workers,
            )  # fmt: skip
    if not config.data.root:
        from pkd_jax.train.loop import validate_config

        validate_config(config)  # stops with what to set
    if not config.data.cache:
        config.data.cache = str(workdir / "cache")
    open_cache(config)  # preprocesses on first use
    return config


def run_all(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (or reuses) every method for every seed and writes the reports."""
    from pkd_jax.train.loop import run

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _enable_compilation_cache(workdir)
    start = time.perf_counter()
    config = prepare_data(config, workdir)
    seeds = tuple(config.experiment.seeds)
    methods = list(config.experiment.get("methods", tuple(METHODS)))
    if unknown := set(methods) - set(METHODS):
        raise ValueError(f"experiment.methods: unknown {sorted(unknown)}; choose from {list(METHODS)}")
    evals: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    for seed in seeds:
        for method in methods:
            out = run_dir(workdir, method, seed)
            done = out / "eval.json"
            if done.is_file():
                logging.info("Reusing %s.", out)
            else:
                logging.info("Training %s, seed %d.", method, seed)
                run(method_config(config, method, seed, workdir), out)
            if not done.is_file():  # stopped by a signal after a checkpoint: resumable, not finished
                raise RuntimeError(
                    f"{out} stopped before its final evaluation; run the same command to resume"
                )
            evals[method][seed] = json.loads(done.read_text())
    results = {
        "config": json.loads(config.to_json_best_effort()),
        "seeds": list(seeds),
        "methods": {m: {str(s): e for s, e in runs.items()} for m, runs in evals.items()},
        "summary": report.summarize(evals, workdir, scope=config.eval.score),
        "complexity": report.complexity_table(config),
        "runtime_s": time.perf_counter() - start,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "results.md").write_text(report.markdown(results))
    report.figure4(workdir, config, seeds[0], workdir / "figure4.png")
    report.training_curves(workdir, methods, seeds[0], workdir / "training_curves.png")
    print((workdir / "results.md").read_text())
    return results


def _enable_compilation_cache(workdir: Path) -> None:
    """Methods and seeds share programs: compile each once, even across runner restarts."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the caller already chose one
        return
    jax.config.update("jax_compilation_cache_dir", str(workdir / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    run_all(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module next to another entry
    # point (tests, notebooks) defines no clashing flags.
    config_flags.DEFINE_config_file("config", None, "Experiment config (e.g. configs/demo.py).")
    flags.DEFINE_string("workdir", None, "Directory for the corpus, cache, runs and reports.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
