"""Tokenisation of examples and raw text into features, and the collator that pads them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from effkit.errors import DataError
from effkit.task import TaskType

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_ENCODE_BATCH = 1024


def _require_fast(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            "token tasks need a fast tokenizer (one backed by the `tokenizers` library)",
            where=type(tokenizer).__name__,
            hint="load the tokenizer with AutoTokenizer and a tokenizer.json",
        )


def _features(encoding: Any, i: int) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "input_ids": list(encoding["input_ids"][i]),
        "attention_mask": list(encoding["attention_mask"][i]),
    }
    if "token_type_ids" in encoding:
        feature["token_type_ids"] = list(encoding["token_type_ids"][i])
    return feature


def _encode_sequence(
    texts: list[str],
    pairs: list[str | None] | None,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = [None] * len(texts)
    if pairs is None or all(p is None for p in pairs):
        groups = [(list(range(len(texts))), False)]
    else:
        with_pair = [i for i, p in enumerate(pairs) if p is not None]
        without = [i for i, p in enumerate(pairs) if p is None]
        groups = [(with_pair, True), (without, False)]
    for indices, paired in groups:
        for start in range(0, len(indices), _ENCODE_BATCH):
            chunk = indices[start : start + _ENCODE_BATCH]
            batch = [texts[i] for i in chunk]
            if paired:
                assert pairs is not None
                encoding = tokenizer(
                    batch,
                    [pairs[i] for i in chunk],
                    truncation="longest_first",
                    max_length=max_length,
                )
            else:
                encoding = tokenizer(batch, truncation=True, max_length=max_length)
            for k, i in enumerate(chunk):
                out[i] = _features(encoding, k)
    return [f for f in out if f is not None]


def _encode_words(
    words: list[list[str]],
    tags: list[list[int]] | None,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> list[dict[str, Any]]:
    _require_fast(tokenizer)
    out: list[dict[str, Any]] = []
    for start in range(0, len(words), _ENCODE_BATCH):
        batch = words[start : start + _ENCODE_BATCH]
        encoding = tokenizer(
            batch, is_split_into_words=True, truncation=True, max_length=max_length
        )
        for k in range(len(batch)):
            feature = _features(encoding, k)
            first: list[int] = []
            previous: int | None = None
            for word in encoding.word_ids(k):
                first.append(word if word is not None and word != previous else -1)
                previous = word
            if tags is not None:
                example_tags = tags[start + k]
                feature["labels"] = [example_tags[w] if w >= 0 else -100 for w in first]
            feature["word_ids"] = first
            out.append(feature)
    return out


def encode(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    task: TaskType,
    max_length: int,
) -> list[dict[str, Any]]:
    """Tokenise labelled examples into model features, truncated to ``max_length`` tokens.

    Sequence tasks give ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the
    tokenizer returns them) and an int ``labels`` (a float for regression). Token tasks label
    the first subword of each word and put -100 on other subwords and special tokens; they also
    carry ``word_ids`` (the word index on first subwords, -1 elsewhere).
    """
    if task != "token-classification":
        texts = [e["text"] for e in examples]
        pairs = [e.get("text_pair") for e in examples]
        features = _encode_sequence(texts, pairs, tokenizer, max_length)
        kind = float if task == "regression" else int
        for feature, example in zip(features, examples, strict=True):
            feature["labels"] = kind(example["label"])
        return features
    words = [list(e["tokens"]) for e in examples]
    tags = [list(e["tags"]) for e in examples]
    return _encode_words(words, tags, tokenizer, max_length)


def encode_texts(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    task: TaskType,
    max_length: int,
    pairs: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Tokenise raw text for prediction (no labels).

    Token tasks split each text on whitespace into words and carry ``word_ids`` (the word index
    on the first subword of each word, -1 on special tokens and later subwords), so predictions
    map back to words.
    """
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(
            f"{len(texts)} texts but {len(pairs)} text pairs",
            where="encode_texts",
            hint="give one pair per text",
        )
    if task != "token-classification":
        pair_list: list[str | None] | None = list(pairs) if pairs is not None else None
        return _encode_sequence(list(texts), pair_list, tokenizer, max_length)
    return _encode_words([t.split() for t in texts], None, tokenizer, max_length)


class Collator:
    """Pads a list of features into a batch of tensors.

    ``input_ids`` pad with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` with 0,
    list-valued ``labels`` with -100 and any other list-valued key (e.g. ``word_ids``) with -1.
    Scalar values (sequence labels) become a 1-d tensor. Batches pad to their longest feature,
    or to ``pad_to`` when set. Holds no tokenizer, so it pickles for DataLoader workers.
    """

    PAD_VALUES: ClassVar[dict[str, int]] = {
        "attention_mask": 0,
        "token_type_ids": 0,
        "labels": -100,
    }

    def __init__(self, pad_token_id: int, pad_to: int | None = None) -> None:
        if pad_to is not None and pad_to < 1:
            raise ValueError(f"pad_to must be at least 1, got {pad_to}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to = pad_to

    def pad_value(self, key: str) -> int:
        """The value ``key`` is padded with."""
        if key == "input_ids":
            return self.pad_token_id
        return self.PAD_VALUES.get(key, -1)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        keys = list(features[0])
        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            values = [f[key] for f in features]
            first = values[0]
            if isinstance(first, (list, tuple, torch.Tensor, np.ndarray)):
                rows = [torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in values]
                longest = max(int(r.numel()) for r in rows)
                width = longest if self.pad_to is None else self.pad_to
                if longest > width:
                    raise DataError(
                        f"a feature has {longest} tokens, more than pad_to={width}",
                        where=f"collator [{key}]",
                        hint="set pad_to to at least the tokenisation max_length",
                    )
                padded = torch.full((len(rows), width), self.pad_value(key), dtype=torch.long)
                for i, row in enumerate(rows):
                    padded[i, : row.numel()] = row
                batch[key] = padded
            elif isinstance(first, (bool, int, np.integer)):
                batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
            elif isinstance(first, (float, np.floating)):
                batch[key] = torch.tensor([float(v) for v in values], dtype=torch.float)
        return batch

    def __repr__(self) -> str:
        return f"Collator(pad_token_id={self.pad_token_id}, pad_to={self.pad_to})"
