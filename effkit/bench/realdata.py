"""Real-data throughput: end-to-end prediction on a task's own texts, models interleaved.

The fixed-shape figure (:mod:`effkit.bench.timing`) times the model alone on a full batch of
``seq_len`` tokens. Served text is shorter and uneven, and prediction does more than the forward
pass: this module times :func:`effkit.inference.predict_texts` itself (tokenisation, sorting by
length, padding each batch to its longest input, a multiplexed model's grouping into N slots,
the softmax and the per-input results) over the texts of a data split, in inputs per second.
Each trial is one pass over the texts (more, until ``min_trial_seconds``); trials rotate the
order of the models as the fixed-shape trials do, and carry the same spread, noise flag and CPU
time. The result states what it ran on: how many texts and their token counts (min, median,
90th percentile, max and mean, after each model's truncation).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from effkit.bench.architecture import same_architecture
from effkit.bench.config import WHERE, BenchConfig
from effkit.bench.environment import environment, load_average, resolve_device
from effkit.bench.results import BenchResult
from effkit.bench.timing import interleave, settings_of, threads
from effkit.errors import DataError, EffkitError, RecipeError, did_you_mean

if TYPE_CHECKING:
    from effkit.data import DataConfig, TaskData
    from effkit.recipe import Recipe
    from effkit.task import TaskType

#: The splits a real-data benchmark may read.
SPLITS = ("train", "validation", "test")


@dataclass
class TextSet:
    """The texts a real-data benchmark predicts (with their second segments, if any)."""

    texts: list[str]
    pairs: list[str] | None
    source: str
    split: str

    def limited(self, limit: int | None) -> TextSet:
        """At most ``limit`` texts, evenly spaced over the set (all of them for None)."""
        count = len(self.texts)
        if limit is None or limit >= count:
            return self
        picked = [i * count // limit for i in range(limit)]
        pairs = None if self.pairs is None else [self.pairs[i] for i in picked]
        return TextSet([self.texts[i] for i in picked], pairs, self.source, self.split)


def texts_of(examples: Sequence[Mapping[str, Any]], *, source: str, split: str) -> TextSet:
    """The raw texts of labelled examples: a sequence task's ``text`` (and ``text_pair``), a
    token task's words joined by spaces (prediction splits them on whitespace again)."""
    if not examples:
        raise DataError(f"the {split} split has no texts to time prediction on", where=source)
    if "tokens" in examples[0]:
        return TextSet([" ".join(e["tokens"]) for e in examples], None, source, split)
    texts = [str(e["text"]) for e in examples]
    pairs = None
    if any(e.get("text_pair") for e in examples):
        pairs = [str(e.get("text_pair") or "") for e in examples]
    return TextSet(texts, pairs, source, split)


def _split_of(data: TaskData, split: str, source: str) -> list[dict[str, Any]]:
    if split not in SPLITS:
        raise RecipeError(f"unknown split '{split}'", hint=did_you_mean(split, list(SPLITS)))
    examples = data.splits.get(split) or []
    if not examples:
        raise DataError(f"the data has no '{split}' split to time prediction on", where=source)
    return examples


def load_texts(cfg: DataConfig, task: TaskType, split: str = "test") -> TextSet:
    """The texts of ``split`` of the data ``cfg`` names (read as ``effkit eval`` reads it)."""
    from effkit.data import load_task_data

    data = load_task_data(cfg, task, None)
    return texts_of(_split_of(data, split, cfg.source), source=cfg.source, split=split)


def recipe_texts(cfg: BenchConfig, recipe: Recipe, data: TaskData | None) -> TextSet | None:
    """The texts a recipe's ``benchmark.data`` names, or None when it names none.

    ``data: true`` is the recipe's own data (``data``, already loaded); a string is a data
    source read with the recipe data section's ``max_length`` (128 without one).
    """
    if cfg.data is False:
        return None
    if cfg.data is True:
        if data is None or recipe.data is None:
            raise RecipeError(
                "benchmark.data: true times prediction on the recipe's own data, but the "
                "recipe has no data section",
                where="benchmark.data",
                hint="give a data section, or a source: benchmark.data: builtin:bbc-news",
            )
        examples = _split_of(data, cfg.data_split, recipe.data.source)
        return texts_of(examples, source=recipe.data.source, split=cfg.data_split)
    from effkit.data import DataConfig

    max_length = recipe.data.max_length if recipe.data is not None else 128
    source = DataConfig(source=cfg.data, max_length=max_length)
    return load_texts(source, recipe.task.type, cfg.data_split)


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Token counts' min, median, 90th percentile (nearest rank), max and mean."""
    ordered = sorted(lengths)
    if not ordered:
        return {}
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]
    return {
        "min": ordered[0],
        "median": float(statistics.median(ordered)),
        "p90": p90,
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 2),
    }


def token_lengths(model: Any, texts: TextSet) -> list[int]:
    """Tokens per input as ``model`` sees them (special tokens in, truncated to its length)."""
    from effkit.data import encode_texts

    features = encode_texts(
        texts.texts, model.tokenizer, model.task.type, model.max_length, pairs=texts.pairs
    )
    return [len(feature["input_ids"]) for feature in features]


def _check_models(models: Mapping[str, Any]) -> None:
    if not models:
        raise EffkitError("no models to measure", where=WHERE)
    for name, model in models.items():
        if getattr(model, "tokenizer", None) is None or not hasattr(model, "task"):
            raise EffkitError(
                f"model '{name}' has no tokenizer and task: real-data throughput predicts raw "
                "text with an effkit model",
                where=WHERE,
                hint="load the model with effkit.load or effkit.load_model",
            )


def _predictor(model: Any, texts: TextSet, batch_size: int) -> Callable[[], Any]:
    from effkit.inference import predict_texts

    return lambda: predict_texts(model, texts.texts, pairs=texts.pairs, batch_size=batch_size)


def measure_texts(
    models: Mapping[str, Any],
    texts: TextSet,
    cfg: BenchConfig,
    *,
    baseline: str | None = None,
    progress: bool = True,
) -> BenchResult:
    """Time end-to-end prediction of ``texts`` by ``models`` (on ``cfg.device``), interleaved.

    Batches of ``cfg.batch_size`` texts; warm-up, trials, statistic, threads and the minimum
    trial time as in ``cfg`` (the device defaults filled in), one pass over the texts per
    trial. The result's timings are in inputs per second (``samples_per_s``), its
    ``settings["data"]`` says what the texts were.
    """
    _check_models(models)
    if baseline is not None and baseline not in models:
        raise EffkitError(f"baseline '{baseline}' is not among the measured models", where=WHERE)
    device = resolve_device(cfg.device)
    resolved = cfg.resolved(device)
    assert resolved.warmup is not None and resolved.trials is not None
    subset = texts.limited(resolved.data_limit)
    size = resolved.batch_size
    head = subset.limited(min(size, len(subset.texts)))  # one batch, to warm up with
    with threads(resolved.threads):
        env = environment(device)
        lengths = {name: token_lengths(model, subset) for name, model in models.items()}
        timings = interleave(
            {name: _predictor(model, subset, size) for name, model in models.items()},
            inputs_per_call=len(subset.texts),
            batch_size=size,
            warmup=resolved.warmup,
            trials=resolved.trials,
            calls_per_trial=1,
            device=device,
            progress=progress,
            min_trial_seconds=resolved.min_trial_seconds,
            statistic=resolved.statistic,
            warmup_calls={name: _predictor(m, head, size) for name, m in models.items()},
            label="real-data trial",
        )
        env["load_after"] = load_average()
        settings = settings_of(resolved, device)
    settings.pop("seq_len")
    settings["batches"] = None  # a trial is a pass over the texts
    first = next(iter(lengths.values()))
    data: dict[str, Any] = {
        "source": subset.source,
        "split": subset.split,
        "texts": len(subset.texts),
        "of_texts": len(texts.texts),
        "pairs": subset.pairs is not None,
        "lengths": length_stats(first),
        "max_length": {name: getattr(model, "max_length", None) for name, model in models.items()},
    }
    if any(values != first for values in lengths.values()):
        data["lengths_by_model"] = {name: length_stats(v) for name, v in lengths.items()}
    settings["data"] = data
    same: dict[str, bool] = {}
    if baseline is not None:
        base = models[baseline]
        for name, model in models.items():
            if name != baseline:
                same[name] = same_architecture(model, base) and lengths[name] == lengths[baseline]
    return BenchResult(timings, baseline, settings, env, same_architecture=same)
