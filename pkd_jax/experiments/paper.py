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

Every run lives in `<workdir>/runs/<method>/seed_<k>`. A finished run has `eval.json` and, when the
cache has a test split, `eval_test.json`; it is reused when the runner is started again, an unfinished one
resumes from its checkpoint. Scores are the raw CCC at the last step (no model selection on the dev set;
the student's teacher is the teacher run of the same seed at its last step as well).

A synthetic corpus in the RECOLA layout can hold a held-out test split (`experiment.corpus_test`
recordings `test_k` with ratings, `configs/demo.py` has 3): every run then also scores its final model on
it (`eval.final_splits = ("test",)`), and the tables report test CCC with dev alongside. Without one (real
RECOLA, whose test labels are not public; the Aff-Wild2 layout) the tables report dev CCC.

Outputs in `<workdir>`, besides `log.txt` (every log line of every run, appended across restarts; the
console shows progress, one line per evaluation and warnings, and everything with `--verbose`):

    results.json           config, seeds, per-run dev results (`methods`) and their mean/std (`summary`),
                           `test` (the same for the test split, null without one), `headline_split`,
                           `paired` (per split: per-seed differences student* - visual and
                           teacher - teacher_black with 95% t-intervals), `gate` (gate.json of every
                           gated student run), `convergence` (per method, the dev curve's best
                           step, final - best and whether it plateaued: `plateau`), complexity and runtime
    results.md             Tables 1, 3, 4, 5 (or 6), distilled shares, gate notes, convergence on
                           dev, paired differences
    figure4.png            predictions of teacher, baseline and students on one dev video (first seed)
    training_curves.png    training loss and dev CCC per target over steps, every method: mean over
                           seeds (line) and min-max over seeds (band)
    gate.png               distribution of the teacher's gamma over training clip starts with the
                           threshold theta, per gated student and seed (only when runs wrote
                           `gate/gammas.npz` and `gate.json`)
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from pkd_jax import console
from pkd_jax.experiments.runner import run_all


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.setup(verbose=flags.FLAGS.verbose)
    log = console.log_to(Path(flags.FLAGS.workdir) / "log.txt")
    run_all(flags.FLAGS.config, flags.FLAGS.workdir)
    print(f"outputs in {flags.FLAGS.workdir}: results.md, results.json, figures (*.png), runs/; log in {log}")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module next to another entry
    # point (tests, notebooks) defines no clashing flags.
    config_flags.DEFINE_config_file("config", None, "Experiment config (e.g. configs/demo.py).")
    flags.DEFINE_string("workdir", None, "Directory for the corpus, cache, runs and reports.")
    flags.DEFINE_bool("verbose", False, "Also show every library's log lines (orbax, jax) on the console.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
