"""Worker processes that die with their parent: a pool initializer's first call."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # From <linux/prctl.h>.
_PARENT_POLL_SECONDS = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """Makes this worker process exit as soon as its parent (pid `parent_pid`) is gone.

    Why: a parent killed by SIGKILL (the OOM killer, `kill -9`, a job scheduler) runs no cleanup, and its
    spawned workers never notice: each holds both ends of the pool's queue pipes, so it never reads EOF and
    blocks forever (or keeps decoding videos nobody collects). On Linux the kernel kills the worker when
    its parent dies (PR_SET_PDEATHSIG; it fires when the parent *thread* that spawned the worker exits,
    which is safe for a pool whose owner thread waits for it to shut down, as `preprocess_corpus` and the
    synthetic corpus's `run_jobs` do). Everywhere, a daemon thread also polls the parent pid: the worker is
    re-parented when the parent dies, and then exits.
    """
    if sys.platform.startswith("linux"):
        # Without a usable libc the polling thread below still covers it.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # The parent died before the signal was armed.
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
