"""The generated recipe reference in docs/ matches the schema of the code."""

from __future__ import annotations

from pathlib import Path

from effkit.schema import reference_markdown

ROOT = Path(__file__).parents[1]


def test_recipe_reference_is_current():
    current = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), (
        "docs/recipes.md is stale: run `effkit schema --format markdown --output docs/recipes.md`"
    )
