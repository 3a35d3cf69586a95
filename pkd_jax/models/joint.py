"""One-stage (online) distillation's pair: a teacher and a student trained in the same step.

The paper trains its teacher first and distils the frozen teacher into the student second; it names
online distillation as future work. `TeacherStudent` holds both networks in one parameter tree
(`params["teacher"]`, `params["student"]`), so one optimizer step updates both and one checkpoint holds
both. Calling it runs both on the same clip; the loss (`pkd_jax.train.steps`) stops the gradient on the
teacher's side of the distillation term, so the student follows the teacher and never pulls it.
`stream` is the student's: evaluation, checkpoint selection, prediction and export use the student, the
network that needs only the camera.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from pkd_jax.models.pkd import Student, Teacher


class TeacherStudent(nn.Module):
    """The teacher (any modality set) and the visual-only student of one-stage distillation."""

    teacher: Teacher
    student: Student

    def __call__(
        self,
        frames: jax.Array | None,
        audio: jax.Array | None = None,
        physio: jax.Array | None = None,
        *,
        train: bool = False,
    ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
        """((student predictions, embedding), (teacher predictions, embedding)) of one clip."""
        return self.student(frames, train=train), self.teacher(frames, audio, physio, train=train)

    def stream(
        self,
        frames: jax.Array | None,
        audio: jax.Array | None = None,
        physio: jax.Array | None = None,
        carry: Any = None,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array, Any]:
        """The student's chunked inference (the other modalities are not used)."""
        del audio, physio
        return self.student.stream(frames, carry, train=train)

    def zero_carry(self, batch: int) -> Any:
        """The student's recurrent state at the start of a video."""
        return self.student.zero_carry(batch)
