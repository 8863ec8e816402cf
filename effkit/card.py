"""The model card every saved folder carries (``README.md``).

It says what the model is (the source, the stack of transforms with what each did, the task
and labels), how well it does and how fast it runs where those were measured (the run's
metrics and benchmark, with the baseline and the machine), what data it was trained on, and how
to load it with effkit, with transformers and as ONNX. The front matter is the YAML block the
Hugging Face hub reads (library, pipeline tag, tags).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effkit.task import TOKEN

PIPELINES = {TOKEN: "token-classification"}


def _front_matter(meta: Mapping[str, Any]) -> list[str]:
    task = meta.get("task", {}).get("type", "")
    tags = ["effkit", *[str(t.get("name")) for t in meta.get("transforms", [])]]
    return [
        "---",
        "library_name: effkit",
        f"pipeline_tag: {PIPELINES.get(task, 'text-classification')}",
        "tags:",
        *[f"- {tag}" for tag in dict.fromkeys(tags)],
        "---",
        "",
    ]


def _stack(meta: Mapping[str, Any]) -> list[str]:
    transforms = meta.get("transforms", [])
    if not transforms:
        return ["No transform: the starting model, fine-tuned or as loaded.", ""]
    lines = ["| # | transform | configuration |", "|---|---|---|"]
    for index, entry in enumerate(transforms, 1):
        config = ", ".join(f"{k}={v}" for k, v in entry.get("config", {}).items())
        lines.append(f"| {index} | `{entry.get('name')}` | {config or '(defaults)'} |")
    return [*lines, ""]


def _metrics(metrics: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    if not metrics:
        return ["Not measured when this folder was written (`effkit eval FOLDER --data ...`).", ""]
    names = sorted({name for split in metrics.values() for name in split})
    lines = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, values in metrics.items():
        cells = [_number(values.get(name)) for name in names]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _bench(bench: Mapping[str, Any] | None) -> list[str]:
    if not bench or not bench.get("timings"):
        return ["Not measured when this folder was written (`effkit bench FOLDER`).", ""]
    settings = bench.get("settings", {})
    env = bench.get("environment", {})
    lines = [
        f"Batch {settings.get('batch_size')} x {settings.get('seq_len')} tokens on "
        f"{env.get('cuda_device') or env.get('cpu', 'unknown hardware')} "
        f"({settings.get('device')}, {settings.get('threads')} threads), "
        f"median of {settings.get('trials')} interleaved trials.",
        "",
        "| model | samples/s | ratio |",
        "|---|---|---|",
    ]
    for name, timing in bench["timings"].items():
        ratio = timing.get("ratio")
        lines.append(
            f"| {name} | {timing.get('samples_per_s', 0):.1f} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} |"
        )
    baseline = bench.get("baseline")
    if baseline:
        lines += ["", f"Ratios are against `{baseline}`."]
    return [*lines, ""]


def _usage(meta: Mapping[str, Any]) -> list[str]:
    task = meta.get("task", {}).get("type", "")
    pipeline = PIPELINES.get(task, "text-classification")
    auto = (
        "AutoModelForTokenClassification"
        if task == TOKEN
        else ("AutoModelForSequenceClassification")
    )
    grouped = any(t.get("name") == "multiplex" for t in meta.get("transforms", []))
    lines = [
        "With effkit (`pip install effkit`, plus the plugins of the stack above):",
        "",
        "```python",
        "import effkit",
        'model = effkit.load("FOLDER")',
        'model.predict(["some text"])',
        "```",
        "",
        "With transformers (after `import effkit`, which registers the `effkit` model type):",
        "",
        "```python",
        "import effkit",
        f"from transformers import {auto}, pipeline",
        f'model = {auto}.from_pretrained("FOLDER")',
        f'run = pipeline("{pipeline}", model="FOLDER"' + (", batch_size=32)" if grouped else ")"),
        "```",
        "",
        "As ONNX: `effkit export FOLDER` writes `FOLDER/model.onnx` and checks it against "
        "PyTorch; `effkit export FOLDER --format hf` writes a folder of stock transformers "
        "classes where the shapes allow it.",
    ]
    if grouped:
        lines += [
            "",
            "This model multiplexes: each forward pass serves N inputs, so give `pipeline` a "
            "`batch_size` of N or more; fewer inputs fill the pass with padding.",
        ]
    return [*lines, ""]


def model_card(model: Any, meta: Mapping[str, Any], facts: Mapping[str, Any] | None = None) -> str:
    """The ``README.md`` text for a saved ``model`` with its ``effkit.json`` ``meta``."""
    facts = dict(facts or {})
    task = meta.get("task", {})
    labels = task.get("labels") or []
    lines = [
        *_front_matter(meta),
        f"# {facts.get('name') or 'effkit model'}",
        "",
        f"Starting model: `{meta.get('source') or 'unknown'}`. Task: {task.get('type')}"
        + (f", {len(labels)} labels: {', '.join(map(str, labels[:20]))}" if labels else "")
        + ("..." if len(labels) > 20 else "")
        + f". {meta.get('num_parameters', 0):,} parameters; inputs up to "
        f"{meta.get('max_length')} tokens. Written by effkit {meta.get('effkit_version')}.",
        "",
        "## Stack",
        "",
        *_stack(meta),
        "## Accuracy",
        "",
        *_metrics(facts.get("metrics")),
        "## Throughput",
        "",
        *_bench(facts.get("bench")),
    ]
    if facts.get("data"):
        lines += ["## Data", "", str(facts["data"]), ""]
    if facts.get("recipe"):
        lines += ["## Recipe", "", "```yaml", str(facts["recipe"]).rstrip(), "```", ""]
    lines += ["## Use", "", *_usage(meta)]
    return "\n".join(lines)


def rewrite_card(folder: Any, model: Any, facts: Mapping[str, Any]) -> None:
    """Write the model card of a saved ``folder`` again with ``facts`` (metrics, benchmark)."""
    from pathlib import Path

    from effkit.storage import read_json, write_text

    meta = read_json(Path(folder) / "effkit.json")
    write_text(Path(folder) / "README.md", model_card(model, meta, facts))
