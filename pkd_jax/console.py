"""What a command prints, and the log file that keeps everything else.

The console shows progress bars, the lines pkd_jax says to the user (`say`: a run's header, one line
per evaluation) and every warning or error, pkd_jax's and the libraries'. The libraries' INFO chatter
(orbax at every checkpoint, jax's backend probing) and pkd_jax's own INFO detail go only to the log
file, unless `--verbose`. The log file gets every record at INFO and above from every logger, with
timestamps, appended across restarts.

    console.setup(verbose=False)  # first thing in an entry point's main
    console.log_to(Path(workdir) / "log.txt")  # then: INFO and above, including what came before
"""

from __future__ import annotations

import collections
import logging
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import logging as absl_logging

# `extra=FILE_ONLY` on a logging call keeps its record off the console: the log file still has it.
FILE_ONLY: Mapping[str, Any] = {"pkd_jax_file_only": True}
# Warnings that mean nothing to a user: (a part of the emitting file's path, the message's start). Orbax
# warns of every checkpoint restored without its optional metadata file, and of every checkpoint saved
# without a dev score (between evaluations) while it keeps the best-scored ones.
SPURIOUS_WARNINGS = (
    ("orbax", "Metadata file does not exist"),
    ("orbax", "Requested `tracked_metric`; did not provide metrics"),
)
FORMAT = "%(asctime)s %(levelname).1s %(filename)s:%(lineno)d] %(message)s"

_state: dict[str, Any] = {"filter": None, "consoles": [], "file": None, "held": None}


class _Held(logging.Handler):
    """The latest records until the log file is named (a multi-process job's process index, in the name,
    is known only after joining the job)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=10_000)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ConsoleFilter(logging.Filter):
    """Lets a record reach the console: any with `verbose`, else warnings and errors that matter."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "pkd_jax_file_only", False):
            return False  # on the console already (`say`), or for the log alone
        if self.verbose:
            return True
        spurious = (p in record.pathname and record.getMessage().startswith(m) for p, m in SPURIOUS_WARNINGS)
        return record.levelno >= logging.WARNING and not any(spurious)


def setup(verbose: bool = False) -> None:
    """Records at INFO and above are made; the console shows what `ConsoleFilter` lets through; the
    records are held until `log_to` names the log file."""
    root = logging.getLogger()
    absl_logging.set_verbosity(absl_logging.INFO)
    root.setLevel(logging.INFO)  # also without absl's handler
    logging.basicConfig()  # a stderr handler, as absl's first call adds, where app.run installed none
    for handler in _state["consoles"]:
        handler.removeFilter(_state["filter"])
    # The console: absl's handler under app.run, else the plain stderr handler of basicConfig.
    absl_handler = absl_logging.get_absl_handler()
    _state["consoles"] = [h for h in root.handlers if h is absl_handler or type(h) is logging.StreamHandler]
    _state["filter"] = ConsoleFilter(verbose)
    for handler in _state["consoles"]:
        handler.addFilter(_state["filter"])
    _close()
    _state["held"] = _Held()
    root.addHandler(_state["held"])
    logging.getLogger("pkd_jax").info("Started: %s", shlex.join(sys.argv), extra=FILE_ONLY)


def log_to(path: str | Path) -> Path:
    """Appends every record at INFO and above to `path` (the ones since `setup` first); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(path, encoding="utf-8")
    file.setLevel(logging.INFO)
    file.setFormatter(logging.Formatter(FORMAT))
    held = _state["held"]
    _close()
    for record in held.records if held is not None else ():
        file.handle(record)
    _state["file"] = file
    logging.getLogger().addHandler(file)
    return path


def _close() -> None:
    """Detaches and closes the held records and the log file of an earlier `setup` or `log_to`."""
    for key in ("held", "file"):
        if _state[key] is not None:
            logging.getLogger().removeHandler(_state[key])
            _state.pop(key).close()
            _state[key] = None


def say(line: str, *, to_console: bool = True) -> None:
    """`line` on the console (above any progress bar) when `to_console`, and in the log file."""
    logging.getLogger("pkd_jax").info("%s", line, extra=FILE_ONLY, stacklevel=2)
    if to_console:
        from tqdm import tqdm  # here: tqdm reads its TQDM_* settings once, on import (pkd_jax.main sets one)

        tqdm.write(line)


def eval_line(step: int, result: Mapping[str, Any], split: str = "dev") -> str:
    """One evaluation in one line: `dev step 300: mean CCC 0.412 (valence 0.401, arousal 0.423)`; a
    population's: `dev step 300: mean CCC over 5 seeds 0.412 (0.301 to 0.523)`."""
    if "members" in result:
        scores = result["member_ccc"]
        return (
            f"{split} step {step}: mean CCC over {len(scores)} seeds {result['mean_ccc']:.3f} "
            f"({min(scores):.3f} to {max(scores):.3f})"
        )
    per_target = result["raw"][result.get("score", "mean_over_videos")]
    detail = ", ".join(f"{target} {value:.3f}" for target, value in per_target.items())
    return f"{split} step {step}: mean CCC {result['mean_ccc']:.3f} ({detail})"
