"""Tasks: the kinds of prediction effkit trains for, their labels and the metric that ranks them.

Every other module reads the task types from here (:data:`TASK_TYPES`), so a new kind of task is
added in one place: its name, its primary metric and the metrics its scores report.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from effkit.errors import ModelError, did_you_mean

TaskType = Literal["sequence-classification", "token-classification"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
SEQUENCE, TOKEN = TASK_TYPES

PRIMARY_METRICS: dict[str, str] = {SEQUENCE: "accuracy", TOKEN: "entity_f1"}
"""The metric that ranks models of each task type (a key of that task's scores)."""


def check_task_type(task: str) -> str:
    """``task`` when it is a known task type; a :class:`ModelError` naming the closest one."""
    if task not in TASK_TYPES:
        raise ModelError(f"unknown task '{task}'", hint=did_you_mean(task, TASK_TYPES))
    return task


def primary_metric(task: str) -> str:
    """The metric key that ranks models for ``task`` (the key in that task's metrics dict)."""
    return PRIMARY_METRICS[check_task_type(task)]


def metric_names(task: str, num_labels: int = 2) -> list[str]:
    """Every metric a task's scores report (computed, so it follows :mod:`effkit.metrics`)."""
    from effkit import metrics

    if check_task_type(task) == TOKEN:
        scores = metrics.token_metrics([["B-x", "O"]], [["B-x", "O"]])
    else:
        labels = max(num_labels, 2)
        scores = metrics.classification_metrics([0, 1], [0, 1], num_labels=labels)
    return sorted(name for name in scores if "/" not in name)


class Task(BaseModel):
    """The task a model is trained for: its type and its label names."""

    model_config = ConfigDict(extra="forbid")

    type: TaskType = Field("sequence-classification", description="The kind of prediction.")
    labels: list[str] | None = Field(
        None, description="Label names in class-id order; read from the data when omitted."
    )

    @property
    def is_token_task(self) -> bool:
        """True for one prediction per token, False for one per input."""
        return self.type == TOKEN

    @property
    def num_labels(self) -> int:
        if not self.labels:
            raise ModelError("the task's labels are not known yet")
        return len(self.labels)
