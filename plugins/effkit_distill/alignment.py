"""CoFi's layer alignment for distillation: which teacher layers are matched, and to which
student layers (princeton-nlp/CoFiPruning, ``layer_distill_version=4``)."""

from __future__ import annotations

import torch


def default_teacher_layers(depth: int) -> list[int]:
    """CoFi's teacher layers for 12 layers ([2, 5, 8, 11]), spread alike for other depths."""
    count = min(4, depth)
    return [(k + 1) * depth // count - 1 for k in range(count)]


def ordered_alignment(losses: torch.Tensor, live: list[bool] | None = None) -> list[int]:
    """CoFi's ordered dynamic match of teacher layers (rows) to student layers (columns).

    From the last teacher layer down, each takes the student layer with the smallest loss among
    the live ones below the previous match; with none left it shares the previous match. An
    infinite loss marks a pair that cannot be compared; a teacher layer with no comparable
    student layer gets -1 (left out of the loss).
    """
    teachers, students = losses.shape
    bound = students
    alignment: list[int] = []
    for row in range(teachers - 1, -1, -1):
        comparable = [s for s in losses[row].argsort().tolist() if bool(losses[row, s].isfinite())]
        choices = [s for s in comparable if s < bound and (live is None or live[s])]
        if choices:
            match = choices[0]
        elif bound < students and bound in comparable:
            match = bound
        else:
            match = comparable[0] if comparable and bound == students else -1
        alignment.append(match)
        if match >= 0:
            bound = match
    alignment.reverse()
    return alignment
