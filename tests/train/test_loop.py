"""The training loop on a `Run` put together in memory: no corpus, no network, no disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import defaults
from pkd_jax.train.loop import NonFiniteLossError, train
from pkd_jax.train.setup import Run


class Recorder:
    """A checkpointer and a metric writer that remember their calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def save(self, step: int, state: Any, data_iterator: Any = None, *, dev_ccc: float | None = None) -> None:
        self.calls.append(("save", step, state, dev_ccc))

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None:
        self.calls.append((kind, step, dict(scalars)))

    def close(self) -> None:
        self.calls.append(("close",))


def scores(ccc: float) -> dict[str, Any]:
    """An evaluation result scoring `ccc` on both targets."""
    per_target = {"valence": ccc, "arousal": ccc}
    return {"mean_ccc": ccc, "raw": {"mean_over_videos": per_target, "concatenated": per_target}}


def in_memory_run(tmp_path: Path, *, start: int = 0, bad_step: int = 0) -> tuple[Run, Recorder, list]:
    """A run whose state counts steps, whose loss is 1 / step (NaN at `bad_step`), scored 0.1 x step."""
    config = defaults.get_config("visual", "synthetic")
    t = config.train
    t.num_steps, t.log_every, t.eval_every, t.checkpoint_every = 7, 2, 3, 5

    def batches():
        for i in range(100):
            yield {"video_id": np.array([f"train_{i}"]), "frame_index": np.array([[10 * i]])}

    def train_step(state: int, batch: dict) -> tuple[int, dict]:
        step = state + 1
        loss = jnp.asarray(np.nan if step == bad_step else 1.0 / step)
        return step, {"loss": loss, "finite": jnp.isfinite(loss)}

    finished: list = []
    recorder = Recorder()
    run = Run(
        config=config, workdir=tmp_path, model=None, state=start, start_step=start, batches=batches(),  # type: ignore[arg-type]
        train_step=train_step, evaluate=lambda state, step: scores(0.1 * step),  # type: ignore[arg-type]
        finish=lambda state, step, last: finished.append((state, step, last)),  # type: ignore[arg-type]
        checkpointer=recorder, writer=recorder,
    )  # fmt: skip
    return run, recorder, finished


def test_the_loop_logs_evaluates_checkpoints_and_finishes_on_schedule(tmp_path):
    run, recorder, finished = in_memory_run(tmp_path)
    result = train(run)
    assert result == scores(pytest.approx(0.7))
    assert finished == [(7, 7, result)]
    logged = [(c[1], c[2]["loss"]) for c in recorder.calls if c[0] == "train"]
    assert [s for s, _ in logged] == [2, 4, 6, 7]  # every log_every steps and the last
    assert logged[0][1] == pytest.approx((1 + 1 / 2) / 2)  # the mean over the steps since the last log
    assert [c[1] for c in recorder.calls if c[0] == "eval"] == [3, 6, 7]
    saves = [(c[1], c[3]) for c in recorder.calls if c[0] == "save"]
    assert saves == [(3, pytest.approx(0.3)), (5, None), (6, pytest.approx(0.6)), (7, pytest.approx(0.7))]
    assert recorder.calls[-2:] == [("close",), ("close",)]


def test_a_resumed_loop_starts_at_its_step_and_a_non_finite_loss_names_the_step_and_clip(tmp_path):
    run, recorder, _ = in_memory_run(tmp_path, start=5)
    train(run)
    assert [c[1] for c in recorder.calls if c[0] == "train"] == [6, 7]
    run, recorder, finished = in_memory_run(tmp_path, bad_step=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3; clips .*: train_2@20"):
        train(run)
    assert finished == [] and ("close",) in recorder.calls  # closed, not finished
