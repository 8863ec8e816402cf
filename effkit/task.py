"""Tasks: the kinds of prediction effkit trains for, their labels and the metric that ranks them.

Every other module reads the task types from here (:data:`TASK_TYPES`), so a new kind of task is
added in one place: its name, its primary metric and the metrics its scores report.

- ``sequence-classification``: one class per input, ranked by ``accuracy``;
- ``token-classification``: one tag per word. Tags that follow an entity scheme (BIO, BIOES,
  IOB1: ``O``, ``B-PER``, ``I-PER``...) are also scored as entities and ranked by
  ``entity_f1``; any other tag set (part of speech, word classes...) is ranked by
  ``token_accuracy``. ``task.tag_scheme`` says which, or ``auto`` reads it from the labels;
- ``regression``: one real number per input (a score), ranked by ``spearman``.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from effkit.errors import ModelError, did_you_mean

TaskType = Literal["sequence-classification", "token-classification", "regression"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
SEQUENCE, TOKEN, REGRESSION = TASK_TYPES

TagScheme = Literal["auto", "bio", "bioes", "iob1", "none"]
TAG_SCHEMES: tuple[str, ...] = get_args(TagScheme)
ENTITY_SCHEMES = ("bio", "bioes", "iob1")
"""The tag schemes whose tags mark entities (scored by entity F1 besides token accuracy)."""

REGRESSION_LABEL = "score"
"""The name of a regression model's single output, unless ``task.labels`` names it."""

PRIMARY_METRICS: dict[str, str] = {
    SEQUENCE: "accuracy",
    TOKEN: "entity_f1",
    REGRESSION: "spearman",
}
"""The metric that ranks models of each task type (a key of that task's scores); token tasks
whose tags are not entity tags are ranked by :data:`TOKEN_PLAIN_METRIC` instead."""
TOKEN_PLAIN_METRIC = "token_accuracy"

LOWER_IS_BETTER = frozenset({"mse"})
"""Reported metrics where less is better; a search, which maximises, cannot aim at them."""


def check_task_type(task: str) -> str:
    """``task`` when it is a known task type; a :class:`ModelError` naming the closest one."""
    if task not in TASK_TYPES:
        raise ModelError(f"unknown task '{task}'", hint=did_you_mean(task, TASK_TYPES))
    return task


def per_input(task: str) -> bool:
    """True for the task types that read one text (or text pair) per example and give one
    prediction per input: sequence classification and regression."""
    return check_task_type(task) != TOKEN


class Task(BaseModel):
    """The task a model is trained for: its type, its label names and, for tags, their scheme."""

    model_config = ConfigDict(extra="forbid")

    type: TaskType = Field("sequence-classification", description="The kind of prediction.")
    labels: list[str] | None = Field(
        None,
        description="Label names in class-id order; read from the data when omitted. Token "
        "tasks: the full tag set (tags that validation or test data hold but train lacks must "
        "be listed here). Regression: at most one name, that of the score.",
    )
    tag_scheme: TagScheme = Field(
        "auto",
        description="Token tasks: how tags are read. bio, bioes, iob1: entity tags (O, B-X, "
        "I-X, E-X, S-X), scored by entity F1 as well as token accuracy; none: any tag set (part "
        "of speech, chunks as plain tags...), scored by token accuracy and macro F1; auto: an "
        "entity scheme when every tag reads as one, else none.",
    )

    @model_validator(mode="after")
    def _fits_type(self) -> Task:
        if self.tag_scheme != "auto" and self.type != TOKEN:
            raise ValueError(
                f"tag_scheme applies to token-classification, not {self.type}; remove it"
            )
        if self.type == REGRESSION and self.labels is not None and len(self.labels) != 1:
            raise ValueError(
                f"a regression task has one output; labels names it (one name, e.g. "
                f"['{REGRESSION_LABEL}']) or is left out, not {len(self.labels)} names"
            )
        return self

    @property
    def is_token_task(self) -> bool:
        """True for one prediction per token, False for one per input."""
        return self.type == TOKEN

    @property
    def is_regression(self) -> bool:
        """True for one real-valued prediction per input."""
        return self.type == REGRESSION

    @property
    def num_labels(self) -> int:
        if self.is_regression:
            return 1
        if not self.labels:
            raise ModelError("the task's labels are not known yet")
        return len(self.labels)

    def entity_scheme(self, labels: list[str] | None = None) -> str | None:
        """The entity scheme the tags follow (``bio``, ``bioes``, ``iob1``), or None when they
        are plain tags; ``labels`` defaults to the task's (``auto`` needs them)."""
        if self.type != TOKEN or self.tag_scheme == "none":
            return None
        if self.tag_scheme != "auto":
            return self.tag_scheme
        from effkit.metrics import detect_scheme

        tags = labels if labels is not None else self.labels
        if not tags:
            return "bio"  # not known yet: the common case, settled once the data is read
        return detect_scheme(tags)

    def primary_metric(self, labels: list[str] | None = None) -> str:
        """The metric key that ranks models of this task (see :data:`PRIMARY_METRICS`)."""
        if self.type == TOKEN and self.entity_scheme(labels) is None:
            return TOKEN_PLAIN_METRIC
        return PRIMARY_METRICS[self.type]

    def metric_names(self, labels: list[str] | None = None) -> list[str]:
        """Every metric this task's scores report (computed, so it follows
        :mod:`effkit.metrics`); per-type or per-tag keys (``f1/PER``) are left out."""
        from effkit import metrics

        if self.type == TOKEN:
            entities = self.entity_scheme(labels) is not None
            scores = metrics.token_metrics([["B-x", "O"]], [["B-x", "O"]], entities=entities)
        elif self.type == REGRESSION:
            scores = metrics.regression_metrics([0.0, 1.0], [0.0, 1.0])
        else:
            count = max(len(labels if labels is not None else self.labels or []) or 5, 2)
            scores = metrics.classification_metrics([0, 1], [0, 1], num_labels=count)
        return sorted(name for name in scores if "/" not in name)


def as_task(task: Task | str) -> Task:
    """``task`` as a :class:`Task` (a bare type name gets the defaults)."""
    return task if isinstance(task, Task) else Task(type=check_task_type(task))


def primary_metric(task: Task | str, labels: list[str] | None = None) -> str:
    """The metric key that ranks models for ``task`` (the key in that task's metrics dict).

    A token task given by its type alone is taken to have entity tags; pass the :class:`Task`
    (or its ``labels``) to have plain tag sets ranked by token accuracy.
    """
    return as_task(task).primary_metric(labels)


def metric_names(
    task: Task | str, num_labels: int = 2, labels: list[str] | None = None
) -> list[str]:
    """Every metric a task's scores report (computed, so it follows :mod:`effkit.metrics`)."""
    spec = as_task(task)
    if labels is None and spec.type == SEQUENCE and not spec.labels:
        labels = [str(i) for i in range(max(num_labels, 2))]
    return spec.metric_names(labels)
