"""The job runner of both layouts: one generator call per recording, in this process or in spawned
worker processes, under a progress bar.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Mapping
from typing import Any

import cv2
from tqdm import tqdm

from pkd_jax.data.worker_process import exit_with_parent


def run_jobs(
    calls: Mapping[str, Callable[[], dict[str, Any]]], workers: int, desc: str, progress: bool
) -> dict[str, dict[str, Any]]:
    """Runs each recording's generator call, in `workers` spawned processes when > 1, under a progress bar."""
    results: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(calls), desc=desc, unit="rec", disable=not progress) as bar:
        if workers <= 1:
            for name, call in calls.items():
                results[name] = call()
                bar.update()
            return results
        ctx = multiprocessing.get_context("spawn")  # Fork is unsafe once JAX/threads exist.
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
        ) as pool:
            futures = {pool.submit(call): name for name, call in calls.items()}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return results


def _worker_init(parent_pid: int) -> None:
    """Exits with the parent, and keeps each worker on one core (OpenCV would spawn its own threads)."""
    exit_with_parent(parent_pid)
    cv2.setNumThreads(1)
