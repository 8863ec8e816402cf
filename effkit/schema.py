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
    stage["transforms"]["items"] = {
        "anyOf": [{"enum": registry.names(registry.TRANSFORMS)}, *plugin_union(registry.TRANSFORMS)]
    }
    objectives = plugin_union(registry.OBJECTIVES)
    stage["objective"] = {
        "description": stage["objective"].get("description", ""),
        "default": "task",
        "anyOf": [{"enum": registry.names(registry.OBJECTIVES)}, *objectives],
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def search_json_schema() -> dict[str, Any]:
    """JSON schema of search specs (``effkit search``)."""
    from effkit.pareto.spec import SearchSpec

    schema = SearchSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


SCHEMA_FILES = {"recipe": "recipe.schema.json", "search": "search.schema.json"}
"""The schema files shipped beside the recipes, which name them in their first line."""


def schema_text(kind: str) -> str:
    """The JSON text of the ``recipe`` or ``search`` schema, as shipped."""
    made = json_schema() if kind == "recipe" else search_json_schema()
    return json.dumps(made, indent=2) + "\n"


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
        "**Shipped recipes** install with effkit: `effkit recipes` lists them with what they",
        "measured, `effkit recipes show NAME` prints one, `effkit recipes copy NAME [DEST]` copies",
        "one to edit (a search spec with its base recipe), and `effkit apply NAME`,",
        "`validate NAME`",
        "and `search NAME` run one by name when no file of that name exists.",
        "",
        "**Editors.** Each shipped recipe starts with",
        "`# yaml-language-server: $schema=recipe.schema.json`",
        "(search specs: `search.schema.json`),",
        "which the YAML language server (VS Code's YAML extension, neovim, Helix...) reads for",
        "completion and checks; a copied recipe names the installed schema file.",
        "`effkit schema [--search] --output FILE` writes the schema of this installation, its",
        "plugins included.",
        "",
        "**Paths** written in a recipe are relative to the recipe file's folder: `model.source`,",
        "`data.source`, `benchmark.baseline`, `benchmark.data` and plugin fields that name files",
        "or models (a distillation `teacher`, an MLM `text_file`). A value counts as a path when",
        "it starts with `./` or `../`, exists beside the recipe, or ends in a data or weights",
        "extension (`.csv`, `.jsonl`, `.parquet`, `.conll`, `.safetensors`...); anything else",
        "(`builtin:...`, a hub id, a stage name) is left as written. A value given with `--set`,",
        "or written by a search's space, is a command-line path: relative to the working folder.",
        "A search spec's `recipe:` is relative to the spec.",
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
