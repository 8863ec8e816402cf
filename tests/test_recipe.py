"""Recipe validation: every mistake is caught before work starts and points at its line."""

from __future__ import annotations

import json
import textwrap

import pytest

from effkit.errors import RecipeError
from effkit.recipe import load_recipe, parse_recipe
from effkit.schema import json_schema

GOOD = textwrap.dedent(
    """\
    name: demo
    model:
      source: preset:tiny
    data:
      source: builtin:synthetic
    stages:
      - name: shrink
        transforms:
          - name: keep-layers
            layers: [0]
        train:
          steps: 0
      - name: finetune
        train:
          steps: 20
          lr: 1.0e-3
    """
)


def parse(text: str, overrides: list[str] | None = None):
    return parse_recipe(textwrap.dedent(text), source="r.yaml", overrides=overrides)


def error(text: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(RecipeError) as info:
        parse(text, overrides)
    return str(info.value)


def test_a_good_recipe_validates_and_builds_its_plugins():
    recipe = parse(GOOD)
    assert [s.name for s in recipe.stages] == ["shrink", "finetune"]
    (keep,) = recipe.stage("shrink").build_transforms()
    assert keep.layers == [0]
    assert recipe.stage("finetune").build_objective().name == "task"
    assert recipe.stage("finetune").train.lr == 1e-3


def test_overrides_address_stages_and_transforms_by_name():
    recipe = parse(
        GOOD,
        [
            "stages.finetune.train.steps=300",
            "stages.shrink.transforms.keep-layers.layers=[1]",
            "seed=7",
        ],
    )
    assert recipe.stage("finetune").train.steps == 300
    assert recipe.stage("shrink").build_transforms()[0].layers == [1]
    assert recipe.seed == 7


def test_override_of_an_unknown_stage_suggests_the_closest():
    message = error(GOOD, ["stages.fintune.train.steps=3"])
    assert "no item named 'fintune'" in message and "finetune" in message


def test_override_with_a_bad_field_names_the_override():
    message = error(GOOD, ["stages.finetune.train.stepz=3"])
    assert "--set stages.finetune.train.stepz=3" in message
    assert "unknown field 'stepz'" in message and "did you mean 'steps'" in message


def test_malformed_yaml_names_line_and_column():
    message = error("name: x\nstages: [\n  - a: b\n")
    assert message.startswith("r.yaml:") and "malformed YAML" in message


def test_a_key_given_twice_is_refused_naming_both_lines():
    message = error(GOOD.replace("steps: 20", "steps: 20\n      steps: 30"))
    assert message.startswith("r.yaml:16")
    assert "key 'steps' is given twice" in message and "lines 15 and 16" in message


def test_yaml_merge_keys_are_not_duplicates():
    recipe = parse(GOOD.replace("steps: 20", "<<: {warmup_ratio: 0.2}\n      steps: 20"))
    assert recipe.stage("finetune").train.warmup_ratio == 0.2


def test_an_alias_bomb_is_refused_quickly_without_expanding_it():
    import time

    levels = ["a: &a [" + ", ".join(["x"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    start = time.perf_counter()
    message = error("\n".join(levels) + "\n")  # 9**9 = 387 million values if expanded
    assert time.perf_counter() - start < 1.0
    assert "expands to more than 100,000 values" in message and "aliases" in message


def test_a_huge_document_is_refused_before_parsing():
    message = error("name: x\n" + "# padding\n" * 200_000)
    assert "bytes; a recipe or search spec is at most" in message


def test_a_recipe_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(RecipeError, match="is a folder, not a YAML file"):
        load_recipe(tmp_path)


def test_unknown_field_names_line_path_and_closest_field():
    message = error(GOOD.replace("lr: 1.0e-3", "learning_rate: 1.0e-3"))
    assert "r.yaml:16" in message
    assert "stages[finetune].train.learning_rate" in message
    assert "unknown field" in message and "lr" in message


def test_wrong_type_names_the_field():
    message = error(GOOD.replace("steps: 20", "steps: many"))
    assert "r.yaml:15" in message and "stages[finetune].train.steps" in message


def test_unknown_transform_lists_known_names():
    message = error(GOOD.replace("name: keep-layers", "name: keep-layer"))
    assert "r.yaml:9" in message
    assert "unknown transform 'keep-layer'" in message and "did you mean 'keep-layers'" in message


def test_bad_transform_field_points_inside_the_transform():
    message = error(GOOD.replace("layers: [0]", "layers: [0]\n        layer: 3"))
    assert "stages[shrink].transforms[keep-layers].layer" in message
    assert "did you mean 'layers'" in message


def test_unknown_objective():
    message = error(
        GOOD.replace("  - name: finetune\n", "  - name: finetune\n    objective: mlmm\n")
    )
    assert "unknown objective 'mlmm'" in message


def test_duplicate_stage_names():
    message = error(GOOD.replace("name: shrink", "name: finetune"))
    assert "two stages are named 'finetune'" in message


def test_out_of_range_values():
    assert "stages[finetune].train.lr" in error(GOOD.replace("lr: 1.0e-3", "lr: -1"))
    ratios = "source: builtin:synthetic\n  split_ratios: [0.5, 0.5, 0.5]"
    assert "data.split_ratios" in error(GOOD.replace("source: builtin:synthetic", ratios))


def test_unknown_builtin_model():
    assert "unknown preset 'tinny'" in error(GOOD.replace("preset:tiny", "preset:tinny"))


def test_empty_and_non_mapping_recipes():
    assert "empty" in error("")
    assert "mapping" in error("- a\n- b\n")


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_schema_lists_installed_transforms_and_forbids_extra_fields():
    schema = json_schema()
    text = json.dumps(schema)
    assert '"const": "keep-layers"' in text
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable for editors


def test_every_shipped_recipe_validates():
    from pathlib import Path

    from effkit.pareto.base import check
    from effkit.pareto.spec import is_search_spec, load_spec

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes, "the recipes/ folder ships recipes"
    for path in recipes:
        if is_search_spec(path):  # its base recipe and every value of its space
            check(load_spec(path))
        else:
            load_recipe(path)
