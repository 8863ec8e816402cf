"""Batched inference: logits for encoded inputs, metrics for a split, predictions for raw text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from effkit import metrics

if TYPE_CHECKING:
    from effkit.models import EffkitModel


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k].to(device) for k in keys if k in batch}


def batched_logits(
    model: EffkitModel,
    features: list[dict[str, list[int]]],
    *,
    batch_size: int = 64,
    bar: str | None = None,
) -> list[torch.Tensor]:
    """Logits of every feature, in order, on the CPU: ``[C]`` per sequence, ``[L, C]`` per token.

    Inputs are sorted by length so that padding is small, and put back in order afterwards.
    ``bar`` labels a progress bar (None: no bar).
    """
    from effkit.data import Collator
    from effkit.progress import track

    if not features:
        return []
    pad_id = model.tokenizer.pad_token_id if model.tokenizer is not None else 0
    collate = Collator(pad_token_id=pad_id or 0)
    device = model.device
    out: list[torch.Tensor | None] = [None] * len(features)
    was_training = model.training
    model.eval()
    batches = length_batches(features, batch_size)
    with torch.inference_mode():
        for idx in track(batches, len(batches), bar, unit="batches"):
            batch = collate([features[i] for i in idx])
            logits = model(**_model_inputs(batch, device)).logits.float().cpu()
            own_rows(out, features, idx, logits)
    model.train(was_training)
    return [t for t in out if t is not None]


def length_batches(features: list[dict[str, Any]], batch_size: int) -> list[list[int]]:
    """Indices of ``features`` in batches of ``batch_size``, shortest inputs first (little
    padding per batch)."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def own_rows(
    out: list[Any], features: list[dict[str, Any]], idx: list[int], logits: torch.Tensor
) -> None:
    """Put row ``r`` of a batch's ``logits`` at ``out[idx[r]]``, cut to its input's length for
    token tasks (rows past ``len(idx)`` are padding and are dropped)."""
    for row, i in enumerate(idx):
        length = len(features[i]["input_ids"])
        out[i] = logits[row, :length] if logits.dim() == 3 else logits[row]


def score(
    model: EffkitModel, features: list[dict[str, list[int]]], logits: list[torch.Tensor]
) -> dict[str, float]:
    """Task metrics of ``logits`` against the labels stored in ``features``."""
    labels = model.task.labels or []
    if model.task.is_regression:
        from effkit.regression import to_data_units

        values = to_data_units(model, torch.stack([lg.reshape(-1)[0] for lg in logits]))
        gold = [float(feat["labels"]) for feat in features]  # type: ignore[arg-type]
        return metrics.regression_metrics(values.tolist(), gold)
    if model.task.is_token_task:
        pred_tags, gold_tags = [], []
        for feat, lg in zip(features, logits, strict=True):
            gold_ids = torch.tensor(feat["labels"])
            keep = gold_ids != -100
            pred_ids = lg.argmax(-1)[keep].tolist()
            pred_tags.append([labels[i] for i in pred_ids])
            gold_tags.append([labels[i] for i in gold_ids[keep].tolist()])
        entities = model.task.entity_scheme() is not None
        return metrics.token_metrics(pred_tags, gold_tags, entities=entities)
    preds = [int(lg.argmax(-1)) for lg in logits]
    classes = [int(feat["labels"]) for feat in features]  # type: ignore[call-overload]
    return metrics.classification_metrics(preds, classes, num_labels=len(labels))


def evaluate_examples(
    model: EffkitModel,
    examples: list[dict[str, Any]],
    *,
    batch_size: int = 64,
    bar: str | None = None,
) -> dict[str, float]:
    """Encode labelled examples, run the model, return the task's metrics."""
    from effkit.data import encode

    features = encode(examples, model.tokenizer, model.task.type, model.max_length)
    logits = batched_logits(model, features, batch_size=batch_size, bar=bar)
    return score(model, features, logits)


def evaluate_seeds(
    model: EffkitModel,
    examples: list[dict[str, Any]],
    seeds: list[int],
    *,
    batch_size: int = 64,
    bar: str | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The task's metrics with each inference seed (how a multiplexed model groups its inputs):
    their means with a ``_std`` beside each, and each seed's own; without seeds, one run in
    input order and no per-seed figures."""
    runs: dict[str, dict[str, float]] = {}
    order: list[int | None] = list(seeds) or [None]
    try:
        for seed in order:
            model.inference_seed = seed
            runs[str(seed)] = evaluate_examples(model, examples, batch_size=batch_size, bar=bar)
    finally:
        model.inference_seed = None
    if not seeds:
        return runs["None"], {}
    if len(runs) == 1:
        return next(iter(runs.values())), runs
    first = next(iter(runs.values()))
    aggregated: dict[str, float] = {}
    for name in first:
        aggregated[name], aggregated[f"{name}_std"] = metrics.mean_std(
            [r[name] for r in runs.values()]
        )
    return aggregated, runs


def set_ensemble(model: EffkitModel, slots: int) -> None:
    """Run each input in ``slots`` of its group's slots at inference (a multiplexed model)."""
    from effkit.errors import ModelError

    adapter = model.adapter
    n = getattr(adapter, "n", None)
    if adapter is None or not hasattr(adapter, "ensemble") or not isinstance(n, int):
        raise ModelError("ensembling needs a multiplexed model, and this one is not multiplexed",
                         hint="leave out --ensemble")  # fmt: skip
    if not 1 <= slots <= n:
        raise ModelError(f"ensemble {slots}: the model groups N={n} inputs; give 1 to {n}")
    adapter.ensemble = slots  # type: ignore[assignment]


def predict_texts(
    model: EffkitModel,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    batch_size: int = 32,
    bar: str | None = None,
) -> list[dict[str, Any]]:
    """One prediction per text, in input order.

    Sequence tasks give ``{"label", "score", "scores"}`` (``score`` the probability of
    ``label``); regression gives ``{"score"}``, the predicted number in the data's units; token
    tasks split the text on whitespace and give ``{"tokens", "tags"}`` with one tag per word
    (words past the model's length limit get ``"O"``, or the first tag when no tag is ``O``).
    """
    from effkit.data import encode_texts
    from effkit.errors import ModelError

    if model.tokenizer is None:
        raise ModelError("the model has no tokenizer, so it cannot read raw text",
                         hint="save the model with its tokenizer")  # fmt: skip
    if pairs is not None and model.task.type == "token-classification":
        raise ModelError("a token task reads one text per input, not a sentence pair",
                         hint="give the texts alone (effkit predict --format lines)")  # fmt: skip
    features = encode_texts(texts, model.tokenizer, model.task.type, model.max_length, pairs=pairs)
    logits = batched_logits(model, features, batch_size=batch_size, bar=bar)
    return predictions(model.task, texts, features, logits)


def predictions(
    task: Any, texts: list[str], features: list[dict[str, Any]], logits: list[torch.Tensor]
) -> list[dict[str, Any]]:
    """The prediction records of :func:`predict_texts` from each text's logits (any runtime)."""
    labels = task.labels or []
    outside = "O" if "O" in labels or not labels else labels[0]
    results: list[dict[str, Any]] = []
    for text, feat, lg in zip(texts, features, logits, strict=True):
        if task.is_regression:
            results.append({"score": round(float(lg.reshape(-1)[0]), 6)})
        elif task.is_token_task:
            words = text.split()
            tags = [outside] * len(words)
            for pos, word in enumerate(feat["word_ids"]):
                if word >= 0:
                    tags[word] = labels[int(lg[pos].argmax())]
            results.append({"tokens": words, "tags": tags})
        else:
            probs = lg.softmax(-1)
            best = int(probs.argmax())
            results.append(
                {
                    "label": labels[best],
                    "score": round(float(probs[best]), 6),
                    "scores": {
                        name: round(float(p), 6) for name, p in zip(labels, probs, strict=True)
                    },
                }
            )
    return results
