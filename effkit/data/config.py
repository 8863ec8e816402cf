"""The data section of a recipe and what loading it gives: splits of labelled examples."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


class DataConfig(BaseModel):
    """Where a task's examples come from and how they are split and cut to length (docs/data.md).

    Every accepted form of ``source``, and which reader takes it, is described in docs/data.md.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description=(
            "'builtin:bbc-news', 'builtin:wnut16', 'builtin:wnut16-types', "
            "'builtin:bbc-news-length', 'builtin:synthetic', 'builtin:synthetic-ner', "
            "'builtin:synthetic-regression'; "
            "a local file (.csv .tsv .json .jsonl .parquet, or CoNLL .conll/.txt/.bio); a local "
            "folder: of such split files (train.csv, dev.jsonl, test.conll...), a hub-style "
            "snapshot (data/ shards, a README.md configs: block) or a save_to_disk folder; "
            "anything else is a dataset name on the Hugging Face hub (e.g. 'glue')."
        )
    )
    subset: str | None = Field(
        default=None,
        description=(
            "Configuration name: of a hub dataset (e.g. 'sst2' for 'glue'), or of a local folder "
            "whose README.md lists configs:."
        ),
    )
    format: Literal["auto", "csv", "json", "parquet", "conll"] = Field(
        default="auto",
        description=(
            "File format of a local file, or of the split files at the top of a folder; 'auto' "
            "goes by file extension (folders the datasets library reads always do)."
        ),
    )
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        default=None,
        description=(
            "Files of a local folder or hub dataset to read, as glob patterns relative to it: "
            "one pattern or a list (all train), or a mapping of split name to pattern(s), e.g. "
            "{train: 'data/train-*.parquet', dev: 'data/dev-*.parquet'}."
        ),
    )
    text_column: str = Field(default="text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        default=None, description="Column holding the second text of sentence-pair tasks."
    )
    label_column: str = Field(
        default="label", description="Column holding the class label (regression: the number)."
    )
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

    @field_validator("data_files")
    @classmethod
    def _data_files_valid(
        cls, value: str | list[str] | dict[str, str | list[str]] | None
    ) -> str | list[str] | dict[str, str | list[str]] | None:
        if value is None:
            return value

        def check(patterns: str | list[str], what: str) -> None:
            items = [patterns] if isinstance(patterns, str) else patterns
            if not items:
                raise ValueError(f"data_files{what} is an empty list; give at least one pattern")
            if any(not item.strip() for item in items):
                raise ValueError(f"data_files{what} holds an empty pattern")

        if isinstance(value, dict):
            if not value:
                raise ValueError("data_files is an empty mapping; map a split name to patterns")
            for split, patterns in value.items():
                if not split.strip():
                    raise ValueError("data_files maps an empty split name")
                check(patterns, f" ({split})")
        else:
            check(value, "")
        return value

    @model_validator(mode="after")
    def _builtin_takes_no_files(self) -> DataConfig:
        if self.source.strip().startswith("builtin:"):
            for option in ("data_files", "subset"):
                if getattr(self, option) is not None:
                    raise ValueError(
                        f"{option} picks part of a folder or hub dataset; '{self.source}' is a "
                        "builtin data set and has none"
                    )
        return self


@dataclass
class TaskData:
    """Labelled examples of one task, split into train, validation and test.

    Sequence examples are ``{"text": str, "text_pair": str | None, "label": int}``; token
    examples are ``{"tokens": list[str], "tags": list[int]}``; regression examples are sequence
    examples whose ``label`` is a float. Class ids index ``labels`` (for regression, the one name
    of the score).
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
