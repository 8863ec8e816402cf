"""Recipe documentation made from the code: the JSON schema for editors, the Markdown reference.

Both include every installed transform's and objective's fields, so ``effkit schema`` and
docs/recipes.md describe exactly what this installation accepts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from effkit import registry
from effkit.bench import BenchConfig
from effkit.data import DataConfig
from effkit.errors import PluginError
from effkit.models import ModelConfig
from effkit.recipe import EvalConfig, Recipe, StageConfig
from effkit.task import Task
from effkit.train import TrainConfig


def json_schema() -> dict[str, Any]:
    """JSON schema of recipes, with every installed transform's and objective's fields."""
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})

    def plugin_union(group: str) -> list[dict[str, Any]]:
        options = []
        for name in registry.names(group):
            try:
                cls = registry.get(group, name)
            except PluginError:
                continue
            sub = cls.model_json_schema()
            defs.update(sub.pop("$defs", {}))
            sub.setdefault("properties", {})
            sub["properties"] = {"name": {"const": name}, **sub["properties"]}
            sub["required"] = ["name", *sub.get("required", [])]
            sub["title"] = name
            options.append(sub)
        return options

    stage = defs["StageConfig"]["properties"]
    stage["transforms"]["items"] = {"oneOf": plugin_union(registry.TRANSFORMS)}
    objectives = plugin_union(registry.OBJECTIVES)
    stage["objective"] = {
        "description": stage["objective"].get("description", ""),
        "default": "task",
        "anyOf": [{"enum": registry.names(registry.OBJECTIVES)}, *objectives],
    }
    return schema


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    text = re.sub(r"\beffkit(\.\w+)*\.", "", text.replace("typing.", ""))
    return text.replace("NoneType", "None").replace("|", "\\|")


def _fields_table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if info.is_required():
            default = "required"
        else:
            value = info.get_default(call_default_factory=True)
            default = "(section)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
        description = (info.description or "").replace("|", "\\|")
        name = info.alias or name
        rows.append(f"| `{name}` | {_type_name(info.annotation)} | {default} | {description} |")
    return rows


def reference_markdown() -> str:
    """The recipe reference (docs/recipes.md), generated from the schema and installed plugins."""
    sections: list[tuple[str, str, type[BaseModel]]] = [
        ("Top level", "", Recipe),
        ("`model`", "", ModelConfig),
        ("`task`", "", Task),
        ("`data`", "", DataConfig),
        ("`stages[]`", "Stages run in order; `--set stages.NAME.field=value` addresses one.",
         StageConfig),
        ("`stages[].train`", "", TrainConfig),
        ("`evaluate`", "", EvalConfig),
        ("`benchmark`", "", BenchConfig),
    ]  # fmt: skip
    lines = [
        "# Recipe reference",
        "",
        "Generated from the schema by `effkit schema --format markdown`; every section forbids",
        "unknown fields. `effkit schema` prints the same as JSON schema for editors.",
        "",
    ]
    for title, note, model in sections:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += [f"## {title}", "", doc + (" " + note if note else ""), ""]
        lines += [*_fields_table(model), ""]
    for group, title in ((registry.TRANSFORMS, "Transforms"), (registry.OBJECTIVES, "Objectives")):
        lines += [f"## {title}", "", f"Installed plugins of the `{group}` entry-point group.", ""]
        for name in registry.names(group):
            cls = registry.get(group, name)
            summary = (cls.__doc__ or "").strip().splitlines()
            lines += [f"### `{name}`", "", summary[0] if summary else "", ""]
            if cls.model_fields:
                lines += [*_fields_table(cls), ""]
            else:
                lines += ["No fields.", ""]
    return "\n".join(lines).rstrip() + "\n"
