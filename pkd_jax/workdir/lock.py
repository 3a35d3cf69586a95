"""One writer per workdir: `<workdir>/train.lock`, held for the whole run.

The lock is an OS file lock (`fcntl.flock`) on `train.lock`, which also records the holder (host, pid,
start time, command line). The kernel releases the file lock when its process ends in any way,
including kill -9, so a dead run never blocks the next one: its record is then stale, reported and
replaced. A second run on a held workdir is refused with the holder's record. The file is never deleted
(deleting it would let two runs lock two different files of the same name); a released lock is an empty
record.

Many processes: process 0 takes the lock for the job and every process learns the outcome, so all of
them stop together when the workdir is in use. The workdir must be on a filesystem with working file
locks across hosts (local disks and NFSv4 have them); on one without, two hosts could both "hold" it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from absl import logging

LOCK_NAME = "train.lock"


class WorkdirInUseError(RuntimeError):
    """Another live run holds the workdir's lock; the message names it."""


def _describe(holder: dict[str, Any]) -> str:
    command = " ".join(holder.get("command", []))[:200]
    return f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {holder.get('started')}" + (
        f" ({command})" if command else ""
    )


def _read_holder(handle: Any) -> dict[str, Any] | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": f"(unreadable record {text[:60]!r})"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?", "started": repr(holder)[:60]}


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the record names another live process of this host (a lock the OS failed to enforce)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """The held lock of one workdir; `release()` (or the end of the process) frees it."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")  # noqa: SIM115 (held open for the run)
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._handle) or {}
            self._handle.close()
            raise WorkdirInUseError(
                f"{self.path.parent} is in use by another run ({_describe(holder)}); wait for it to finish "
                f"or stop it, or train in another workdir (lock file: {self.path})"
            ) from None
        previous = _read_holder(self._handle)
        if previous and _alive_here(previous):
            self._release_os_lock()
            raise WorkdirInUseError(
                f"{self.path.parent} is in use by another run ({_describe(previous)}), which holds its "
                f"record although this filesystem did not enforce the lock; lock file: {self.path}"
            )
        if previous:
            logging.warning("Taking over the stale lock of a run that ended: %s.", _describe(previous))
        self._write(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": list(sys.argv),
            }
        )

    def _write(self, record: dict[str, Any] | None) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        if record is not None:
            self._handle.write(json.dumps(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _release_os_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()

    def release(self) -> None:
        """Clears the record and frees the lock (idempotent)."""
        if self._handle.closed:
            return
        with contextlib.suppress(OSError):
            self._write(None)
        self._release_os_lock()


@contextlib.contextmanager
def hold_workdir(workdir: str | Path) -> Iterator[WorkdirLock | None]:
    """Holds `workdir`'s lock for the job: process 0 takes it; every process raises if it is in use."""
    import jax

    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir)
        except WorkdirInUseError as e:
            error = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        taken = bool(np.all(multihost_utils.process_allgather(np.asarray(error is None))))
        if not taken and error is None:
            error = WorkdirInUseError(f"{workdir} is in use by another run (process 0 names it)")
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
