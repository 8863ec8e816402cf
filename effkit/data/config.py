"""The data section of a recipe and what loading it gives: splits of labelled examples."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


class DataConfig(BaseModel):
    """Where a task's examples come from and how they are split and cut to length."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description=(
            "'builtin:bbc-news', 'builtin:wnut16', 'builtin:synthetic', 'builtin:synthetic-ner'; "
            "a local file or folder (.csv .tsv .json .jsonl .parquet, or CoNLL .conll/.txt/.bio); "
            "anything else is a dataset name on the Hugging Face hub (e.g. 'glue')."
        )
    )
    subset: str | None = Field(
        default=None, description="Configuration name of a hub dataset, e.g. 'sst2' for 'glue'."
    )
    format: Literal["auto", "csv", "json", "parquet", "conll"] = Field(
        default="auto", description="File format of a local source; 'auto' goes by file extension."
    )
    text_column: str = Field(default="text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        default=None, description="Column holding the second text of sentence-pair tasks."
    )
    label_column: str = Field(default="label", description="Column holding the class label.")
    tokens_column: str = Field(
        default="tokens",
        description="Token tasks from csv/json/hub: column holding the list of words.",
    )
    tags_column: str = Field(
        default="tags",
        description="Token tasks from csv/json/hub: column holding one tag per word.",
    )
    train_split: str = Field(default="train", description="Name of the train split in the source.")
    validation_split: str = Field(
        default="validation", description="Name of the validation split in the source."
    )
    test_split: str = Field(default="test", description="Name of the test split in the source.")
    split_ratios: tuple[float, float, float] = Field(
        default=(0.7, 0.1, 0.2),
        description=(
            "Train/validation/test shares used to carve the splits a source lacks out of train "
            "(a fixed, seeded split, stratified by label for sequence tasks)."
        ),
    )
    split_seed: int = Field(
        default=0, description="Seed of carved splits and of the generated builtin data sets."
    )
    max_length: int = Field(
        default=128, ge=8, description="Tokens per input after tokenisation (longer is truncated)."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many examples per split (the first ones, after splitting).",
    )

    @field_validator("split_ratios")
    @classmethod
    def _ratios_valid(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r <= 0 for r in value):
            raise ValueError(f"split_ratios must all be positive, got {list(value)}")
        if not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError(f"split_ratios must sum to 1, got {list(value)} (sum {sum(value):g})")
        return value


@dataclass
class TaskData:
    """Labelled examples of one task, split into train, validation and test.

    Sequence examples are ``{"text": str, "text_pair": str | None, "label": int}``; token
    examples are ``{"tokens": list[str], "tags": list[int]}``. Class ids index ``labels``.
    """

    task: TaskType
    labels: list[str]
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: str = ""

    def fingerprint(self) -> str:
        """A sha256 over task, labels and every example: equal data give equal fingerprints."""
        digest = hashlib.sha256()
        head = {"task": self.task, "labels": self.labels}
        digest.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        for name in sorted(self.splits):
            digest.update(f"\x00split:{name}\x00".encode())
            for example in self.splits[name]:
                line = json.dumps(example, sort_keys=True, ensure_ascii=False)
                digest.update(line.encode("utf-8"))
                digest.update(b"\n")
        return digest.hexdigest()


@dataclass
class RawSplit:
    """Examples of one split before labels become ids; ``names`` holds ClassLabel names."""

    rows: list[dict[str, Any]]
    where: str
    names: list[str] | None = None
