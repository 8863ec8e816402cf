"""The ``effkit`` commands that take a saved model folder: bench, eval, predict, export."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from effkit.cli_common import bench_table, metrics_table
from effkit.console import out, switches
from effkit.errors import did_you_mean


class Statistic(str, Enum):
    """Which trial of a benchmark is reported."""

    median = "median"
    best = "best"


def bench(
    model_dir: Annotated[Path, typer.Argument(help="Saved effkit model folder.")],
    baseline: Annotated[Path | None, typer.Option(help="Model folder to compare with.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per batch.")] = 128,
    seq_len: Annotated[int, typer.Option(min=2, help="Tokens per input.")] = 128,
    warmup: Annotated[int | None, typer.Option(min=0, help="Warm-up batches per model.")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Timed trials.")] = None,
    statistic: Annotated[
        Statistic, typer.Option(help="Report the median trial, or the fastest (best).")
    ] = Statistic.median,
    batches: Annotated[int | None, typer.Option(min=1, help="Batches per trial.")] = None,
    min_trial_seconds: Annotated[
        float, typer.Option(min=0, help="A trial lasts at least this long.")
    ] = 0.0,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    memory: Annotated[bool, typer.Option(help="Peak memory per model (subprocess).")] = False,
    data: Annotated[
        str | None,
        typer.Option(help="Also time prediction on this data's texts (as a recipe's data.source)."),
    ] = None,
    split: Annotated[str, typer.Option(help="The split of --data to time.")] = "test",
    data_limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many texts of --data.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Data option for --data: text_column=sentence, limit=500..."),
    ] = None,
    runtimes: Annotated[
        bool,
        typer.Option(
            "--runtimes",
            help="Also time the baseline (or the model, without --baseline) in every plain "
            "runtime: bf16/fp16 where the hardware has them, torch int8, ONNX Runtime; ratios "
            "against the fastest too.",
        ),
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """Measure a model's throughput (and a baseline's, interleaved in the same process).

    With --data, end-to-end prediction on that data's texts is timed too, in inputs per second.
    """

    from effkit.bench import BenchConfig, compare, load_texts, resolve_device
    from effkit.errors import RecipeError
    from effkit.models import load
    from effkit.storage import write_json

    if split not in ("train", "validation", "test"):
        raise RecipeError(
            f"unknown split '{split}'", hint=did_you_mean(split, ["train", "validation", "test"])
        )
    if set_ and data is None:
        raise RecipeError("--set gives data options, and needs --data")
    cfg = BenchConfig(
        batch_size=batch_size, seq_len=seq_len, warmup=warmup, trials=trials, batches=batches,
        threads=threads, device=device, memory=memory, statistic=statistic.value,
        min_trial_seconds=min_trial_seconds, data=data or False, data_split=split,
        data_limit=data_limit,
    )  # fmt: skip
    dev = resolve_device(device)
    folders = {"model": model_dir}
    if baseline is not None:
        folders["baseline"] = baseline
    models = {name: load(path, device=dev) for name, path in folders.items()}
    texts = None
    if data is not None:
        data_cfg = _data_options(
            data, models["model"].max_length, set_, models["model"].data_columns
        )
        if any(item.partition("=")[0].strip() == "max_length" for item in set_ or []):
            from effkit.checks import check_max_length

            for model in models.values():
                check_max_length(model, data_cfg.max_length, "max_length")
                model.max_length = data_cfg.max_length
        texts = load_texts(data_cfg, models["model"].task.type, split)
    reference = "baseline" if baseline is not None else ("model" if runtimes else None)
    variants = None
    if runtimes and reference is not None:
        from effkit.runtimes import baseline_runtimes

        variants = baseline_runtimes(models[reference], dev)
    data_out = compare(models, cfg, baseline=reference, folders=folders, texts=texts,
                       runtimes=variants)  # fmt: skip
    out.print(bench_table(data_out))
    if json_out is not None:
        write_json(json_out, data_out)


def _data_options(
    source: str, max_length: int, options: list[str] | None, columns: dict[str, str] | None = None
) -> Any:
    """The data config of ``--data SOURCE --set KEY=VALUE ...``, read as a recipe's ``--set``,
    on top of the columns the model was trained on; a bad option is one line naming it."""
    from pydantic import ValidationError

    from effkit.data import DataConfig
    from effkit.errors import RecipeError
    from effkit.recipe import apply_overrides

    fields: dict[str, Any] = {"source": source, "max_length": max_length, **(columns or {})}
    apply_overrides(fields, options or [])
    try:
        return DataConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise RecipeError(f"data options: {problems}") from None


def eval_(
    model_dir: Annotated[Path, typer.Argument(help="Saved effkit model folder.")],
    data: Annotated[str, typer.Option(help="Data source (as in a recipe's data.source).")],
    split: Annotated[list[str] | None, typer.Option(help="Split(s) to score.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Data option: text_column=sentence, max_length=256..."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per batch.")] = 64,
    inference_seed: Annotated[
        list[int] | None,
        typer.Option(
            "--inference-seed",
            help="Group a multiplexed model's inputs with this seed; give it several times for "
            "the mean and spread (as a recipe's evaluate.inference_seeds).",
        ),
    ] = None,
    ensemble: Annotated[
        int | None,
        typer.Option(
            min=1, help="A multiplexed model runs each input in K of its N slots and averages."
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics here.")] = None,
) -> None:
    """Score a saved model on labelled data."""

    from effkit.data import load_task_data
    from effkit.errors import RecipeError
    from effkit.inference import evaluate_seeds, set_ensemble
    from effkit.models import load
    from effkit.storage import write_json

    model = load(model_dir)
    if ensemble is not None:
        set_ensemble(model, ensemble)
    seeds = list(inference_seed or [])
    if len(set(seeds)) != len(seeds):
        raise RecipeError(f"--inference-seed: a seed is given twice ({seeds})")
    cfg = _data_options(data, model.max_length, set_, model.data_columns)
    splits = split or ["test"]
    for name in splits:
        if name not in ("train", "validation", "test"):
            raise RecipeError(
                f"unknown split '{name}'",
                hint=did_you_mean(name, ["train", "validation", "test"]),
            )
    model.max_length = cfg.max_length
    task_data = load_task_data(cfg, model.task.type, model.task.labels)
    metrics: dict[str, dict[str, float]] = {}
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for name in splits:
        bar = None if switches.quiet else name
        metrics[name], runs = evaluate_seeds(model, task_data.splits[name], seeds,
                                             batch_size=batch_size, bar=bar)  # fmt: skip
        if runs:
            per_seed[name] = runs
    out.print(metrics_table(metrics, f"{model_dir}"))
    if json_out is not None:
        write_json(json_out, {**metrics, "per_seed": per_seed} if per_seed else metrics)


class InputFormat(str, Enum):
    """How ``effkit predict`` reads its input."""

    auto = "auto"
    lines = "lines"
    tsv = "tsv"
    jsonl = "jsonl"


def predict(
    model_dir: Annotated[Path, typer.Argument(help="Saved effkit model folder.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Text file, one input per line; - for stdin.")
    ] = "-",
    format_: Annotated[
        InputFormat,
        typer.Option(
            "--format",
            help="lines: one text per line; tsv: a text and its pair per line, tab-separated; "
            "jsonl: one JSON object per line. auto: jsonl for a .jsonl file, tsv for a model "
            "trained on sentence pairs, lines otherwise.",
        ),
    ] = InputFormat.auto,
    text_field: Annotated[
        str | None, typer.Option(help="jsonl: the text's field (default: the model's column).")
    ] = None,
    pair_field: Annotated[
        str | None, typer.Option(help="jsonl: the pair's field (default: the model's column).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per batch.")] = 32,
) -> None:
    """Predict raw text (a text, or a sentence pair, per line); writes one JSON line per input,
    in order."""
    from effkit.checks import saved_json
    from effkit.errors import DataError
    from effkit.models import load, require_effkit_dir

    folder = require_effkit_dir(model_dir)
    if not (folder / "tokenizer_config.json").is_file():
        raise DataError(f"'{model_dir}' holds no tokenizer, so it cannot read raw text")
    columns = saved_json(folder / "effkit.json").get("data_columns") or {}
    where = "standard input" if input == "-" else input
    if input == "-":
        if sys.stdin is None or not hasattr(sys.stdin, "buffer"):
            raise DataError("standard input is closed; give --input FILE")
        lines = _text_lines(sys.stdin.buffer.read(), where)
    else:
        path = Path(input)
        if path.is_dir():
            raise DataError(f"input '{path}' is a folder; give a text file, or - for stdin")
        if not path.is_file():
            raise DataError(f"input file '{path}' does not exist")
        lines = _text_lines(path.read_bytes(), where)
    kind = format_.value
    if kind == "auto":
        paired = bool(columns.get("text_pair_column"))
        kind = "jsonl" if input.endswith(".jsonl") else "tsv" if paired else "lines"
    fields = (text_field or columns.get("text_column") or "text",
              pair_field or columns.get("text_pair_column") or "text_pair")  # fmt: skip
    rows = _input_rows(lines, kind, fields, where)
    if not rows:
        raise DataError("no input text (one input per non-empty line)", where=where)
    texts = [text for _, text, _ in rows]
    given = [pair for _, _, pair in rows]
    pairs = [p or "" for p in given] if any(p is not None for p in given) else None
    if pairs is not None and None in given:
        line = rows[given.index(None)][0]
        raise DataError("this input has no pair, while others do", where=f"{where}:{line}",
                        hint="give every input a pair, or none")  # fmt: skip
    model = load(model_dir)
    results = model.predict(texts, pairs=pairs, batch_size=batch_size)
    for number, result in enumerate(results):
        shown = {"text": texts[number]} if pairs is None else {
            "text": texts[number], "text_pair": pairs[number]}  # fmt: skip
        sys.stdout.write(json.dumps({**shown, **result}, ensure_ascii=False) + "\n")


def _input_rows(
    lines: list[str], kind: str, fields: tuple[str, str], where: str
) -> list[tuple[int, str, str | None]]:
    """``(line number, text, pair or None)`` for each non-empty line of ``predict``'s input."""
    from effkit.errors import DataError

    rows: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{where}:{number}"
        if kind == "lines":
            rows.append((number, line, None))
        elif kind == "tsv":
            text, tab, pair = line.partition("\t")
            if not tab or "\t" in pair:
                raise DataError("expected a text and its pair separated by one tab", where=at,
                                hint="or --format lines for one text per line")  # fmt: skip
            rows.append((number, text, pair))
        else:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not a JSON object: {exc.msg}", where=at) from None
            if not isinstance(item, dict):
                raise DataError("expected a JSON object per line", where=at)
            value, second = item.get(fields[0]), item.get(fields[1])
            if not isinstance(value, str):
                raise DataError(f"no text field '{fields[0]}' (a string)", where=at,
                                hint=f"the object's fields: {', '.join(item) or 'none'}; "
                                "choose one with --text-field")  # fmt: skip
            if second is not None and not isinstance(second, str):
                raise DataError(f"the pair field '{fields[1]}' is not a string", where=at)
            rows.append((number, value, second))
    return rows


def _text_lines(raw: bytes, where: str) -> list[str]:
    """The lines of UTF-8 text in ``raw``; a DataError naming the first byte that is not text."""
    from effkit.errors import DataError

    hint = "give UTF-8 text, one input per line"
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        raise DataError(f"binary data: a NUL byte at offset {offset}", where=where, hint=hint)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line})",
            where=where,
            hint=hint,
        ) from None
    return text.splitlines()


def export_(
    model_dir: Annotated[Path, typer.Argument(help="Saved effkit model folder.")],
    format_: Annotated[
        str,
        typer.Option("--format", help="onnx, or hf: a stock transformers folder (no effkit)."),
    ] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option(help="Output file or folder (default MODEL_DIR/model.onnx, MODEL_DIR-hf)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Inputs per batch for check and bench.")
    ] = 8,
    seq_len: Annotated[
        int, typer.Option(min=2, help="Tokens per input for check and bench.")
    ] = 128,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Compare with PyTorch (onnxruntime).")
    ] = True,
    bench: Annotated[bool, typer.Option("--bench", help="Time onnxruntime vs PyTorch.")] = False,
    trials: Annotated[int | None, typer.Option(min=1, help="Timed trials (--bench).")] = None,
    batches: Annotated[int | None, typer.Option(min=1, help="Batches per trial (--bench).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads (--bench).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Export a saved model to ONNX (every stack) or a stock transformers folder, and check it."""
    from effkit.bench import BenchConfig
    from effkit.export import export_model, summary
    from effkit.storage import write_json

    cfg = BenchConfig(trials=trials, batches=batches, threads=threads, device="cpu")
    report = export_model(model_dir, output, format=format_, batch_size=batch_size,
                          seq_len=seq_len, check=check, bench=bench, bench_config=cfg)  # fmt: skip
    for line in summary(report):
        out.print(line, highlight=False, soft_wrap=True)
    if json_out is not None:
        write_json(json_out, report)
