"""Benchmark the train and evaluation steps of a config on random inputs of the configured shapes.

    python -m pkd_jax.bench --config=configs/recola_student.py --what=train|eval|pipeline|preprocess [--json]
    python -m pkd_jax.bench --config=configs/demo.py --what=population --population=1,4,16,32 --seed_steps=100

`--what=train|eval`: for each step kind (teacher, visual, student with the teacher online or cached) it
reports the compile time separately, then the median / min / max time of `--steps` timed steps after
`--warmup` steps (each ended with `block_until_ready`), frames per second, XLA's FLOP count of the
compiled step cross-checked against an analytic count (2 x the MACs of every convolution and matrix
product in the step's jaxpr), the achieved FLOP/s and the MFU against the device's peak (`pkd_jax.perf.peak`:
a measured matmul peak on CPU, data-sheet peaks on GPUs and TPUs), and XLA's memory analysis.
`--what=pipeline` times the training input pipeline (clips with and without audio), `--what=preprocess`
the preprocessing of a corpus, both on the config's corpus or a generated synthetic one (`pkd_jax.perf.data_bench`).
`--what=population` reports seeds per hour of S seeds trained in one vmapped program against S runs one
after another and PyTorch eager (`pkd_jax.perf.population_bench`; `--kinds` defaults to student_cached).
`--json` prints one machine-readable line per result, each with its `provenance` (`pkd_jax.provenance`).

    --profile_dir=DIR   a jax.profiler trace of the timed steps (TensorBoard / XProf), one annotated
                        step each, plus the most expensive operations per step (`top_ops`)
    --dump_hlo=DIR      the optimized HLO of every compiled step, one file per kind
    --complexity        parameters and per-frame MACs of student and teacher (paper Table 3) instead
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from pkd_jax.perf import population_bench
from pkd_jax.perf.complexity import complexity_table
from pkd_jax.perf.data_bench import data_benchmark, format_data_table
from pkd_jax.perf.train_step import KINDS, benchmark, format_table
from pkd_jax.provenance import provenance
from pkd_jax.train.cpu_flags import apply_cpu_flags


def define_flags() -> None:
    """The command-line flags; defined only when run as a program, so imports never clash."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:args]).")
    flags.DEFINE_enum(
        "what", "train", ["train", "eval", "pipeline", "preprocess", "population"], "What to time."
    )
    flags.DEFINE_list("kinds", list(KINDS), f"Step kinds among {KINDS}.")
    flags.DEFINE_integer("steps", 10, "Timed steps.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    flags.DEFINE_integer("n_mels", 64, "Mel bins of the audio input.")
    flags.DEFINE_integer("audio_frames", 100, "Spectrogram frames per audio window (1 s at 10 ms).")
    flags.DEFINE_bool("json", False, "Print one JSON line per kind instead of a table.")
    flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of the timed steps here.")
    flags.DEFINE_string("dump_hlo", None, "Write the optimized HLO of each step here.")
    flags.DEFINE_bool("complexity", False, "Report parameters and MACs (Table 3) instead.")
    flags.DEFINE_integer("top_ops", 15, "With --profile_dir: how many of the costliest operations to list.")
    flags.DEFINE_float("peak_flops", None, "Peak FLOP/s for MFU, instead of the measured or data-sheet peak.")
    flags.DEFINE_string("corpus_root", "/tmp/pkd_jax_bench", "pipeline/preprocess: synthetic corpus cache.")
    flags.DEFINE_integer("corpus_train", 2, "pipeline/preprocess: synthetic training recordings.")
    flags.DEFINE_integer("corpus_dev", 1, "pipeline/preprocess: synthetic development recordings.")
    flags.DEFINE_float("corpus_seconds", 20.0, "pipeline/preprocess: seconds per synthetic recording.")
    flags.DEFINE_integer("corpus_frame_size", 256, "pipeline/preprocess: synthetic frame side in pixels.")
    flags.DEFINE_integer("workers", 1, "preprocess: worker processes (1 gives per-core numbers).")
    flags.DEFINE_integer("batches", 40, "pipeline: timed batches.")
    flags.DEFINE_list("population", ["1", "4", "16", "32"], "population: seeds per vmapped program.")
    flags.DEFINE_integer("seed_steps", 100, "population: optimizer steps of one seed.")
    flags.DEFINE_integer("rounds", 3, "population: rounds over all arms, in alternating order.")
    flags.DEFINE_bool("torch", True, "population: also train the seeds in PyTorch eager.")
    flags.DEFINE_integer("torch_threads", 0, "population: PyTorch's threads (0: one per core).")
    flags.DEFINE_integer("sequential_seeds", 4, "population: seeds timed one after another per round.")


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    apply_cpu_flags(f.config.model.dtype)  # before JAX starts a backend
    if f.complexity:
        rows = complexity_table(f.config)
        if f.json:
            print(json.dumps({"what": "complexity", **rows, "provenance": provenance()}))
        else:
            for name, row in rows.items():
                print(f"{name:28} {row['params_M']:8.2f} M params {row['GMACs_per_frame']:8.3f} GMACs/frame")
        return
    if f.what in ("pipeline", "preprocess"):
        names = ("corpus_root", "corpus_train", "corpus_dev", "corpus_seconds", "corpus_frame_size", "workers",
                 "batches")  # fmt: skip
        results = data_benchmark(f.config, f.what, **{n: f[n].value for n in names})
        table = format_data_table
    elif f.what == "population":
        results = population_bench.benchmark(
            f.config, f.kinds if f["kinds"].present else [population_bench.DEFAULT_KIND], rounds=f.rounds,
            population=[int(s) for s in f.population], seed_steps=f.seed_steps, torch=f.torch,
            torch_threads=f.torch_threads, sequential_seeds=f.sequential_seeds, n_mels=f.n_mels, audio_frames=f.audio_frames,
        )  # fmt: skip
        table = population_bench.format_table
    else:
        results = benchmark(
            f.config, f.what, f.kinds, steps=f.steps, warmup=f.warmup, n_mels=f.n_mels, audio_frames=f.audio_frames,
            profile_dir=f.profile_dir, dump_hlo=f.dump_hlo, top_ops=f.top_ops, peak_flops=f.peak_flops,
        )  # fmt: skip
        table = format_table
    if f.json:
        print("\n".join(json.dumps({**r, "provenance": provenance()}) for r in results))
    else:
        print(table(results))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)
