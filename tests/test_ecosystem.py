"""effkit among the user's files: shipped recipes by name, paths relative to the recipe, a saved
model's data columns, the schemas editors read, the report's loss panels, the progress bar."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest

from effkit.cli import main
from effkit.recipe import load_recipe
from effkit.shipped import copy, find, recipe_path, recipes_dir, shipped

ROOT = Path(__file__).parents[1]


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# ----------------------------------------------------------------- shipped recipes


def test_every_shipped_recipe_describes_itself_and_names_its_schema():
    found = {item.name: item for item in shipped()}
    assert set(found) == {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    assert found["pareto_search"].kind == "search" and found["quickstart"].kind == "recipe"
    for item in found.values():
        text = item.path.read_text(encoding="utf-8")
        kind = "search" if item.kind == "search" else "recipe"
        assert text.startswith(f"# yaml-language-server: $schema={kind}.schema.json\n"), item.name
        assert item.description and item.measured, item.name
        assert "\n" not in item.description and item.description.endswith("."), item.name


def test_recipes_lists_them(capsys):
    assert run_cli(["recipes"]) == 0
    shown = capsys.readouterr().out
    for name in ("quickstart", "mux2_cofi", "pareto_search"):
        assert name in shown
    assert "0.982" in shown  # the quickstart's measured test accuracy


def test_a_shipped_name_works_where_a_recipe_file_does(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing named quickstart here
    assert recipe_path("quickstart") == find("quickstart") == recipes_dir() / "quickstart.yaml"
    assert recipe_path("quickstart.yaml") == find("quickstart")
    assert run_cli(["validate", "quickstart"]) == 0
    assert "quickstart: valid" in capsys.readouterr().out.replace("quickstart.yaml", "quickstart")
    (tmp_path / "quickstart.yaml").write_text("name: mine\n", encoding="utf-8")
    assert recipe_path("quickstart.yaml") == Path("quickstart.yaml")  # a file of the name wins


def test_an_unknown_name_is_one_message_with_the_closest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(["apply", "quikstart"]) == 2
    err = capsys.readouterr().err
    assert "no recipe file or shipped recipe named 'quikstart'" in err and "quickstart" in err
    assert not (tmp_path / "runs").exists()
    assert run_cli(["recipes", "copy", "nothing-like-it"]) == 2
    assert "no shipped recipe named" in capsys.readouterr().err


def test_copy_writes_an_editable_recipe_that_still_finds_its_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(["recipes", "copy", "quickstart"]) == 0
    text = (tmp_path / "quickstart.yaml").read_text(encoding="utf-8")
    schema = (recipes_dir() / "recipe.schema.json").resolve().as_uri()
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={schema}"
    assert load_recipe(tmp_path / "quickstart.yaml").name == "quickstart"
    assert run_cli(["recipes", "copy", "quickstart"]) == 2  # kept unless --force
    assert run_cli(["recipes", "copy", "quickstart", "--force"]) == 0
    # a search spec brings its base recipe, so that the copy runs as it is
    (tmp_path / "mine").mkdir()
    written = copy("pareto_search", tmp_path / "mine")
    assert [p.name for p in written] == ["pareto_search.yaml", "pareto_base.yaml"]
    assert run_cli(["validate", str(tmp_path / "mine" / "pareto_search.yaml")]) == 0


def test_show_prints_the_yaml(capsys):
    assert run_cli(["recipes", "show", "quickstart"]) == 0
    assert capsys.readouterr().out == find("quickstart").read_text(encoding="utf-8")


def test_the_shipped_schemas_are_current(capsys):
    from effkit.schema import SCHEMA_FILES, schema_text

    for kind, name in SCHEMA_FILES.items():
        shipped_text = (ROOT / "recipes" / name).read_text(encoding="utf-8")
        assert shipped_text == schema_text(kind), (
            f"recipes/{name} is stale: run `effkit schema {'--search ' * (kind == 'search')}"
            f"--output recipes/{name}`"
        )
    assert run_cli(["schema", "--search"]) == 0
    search = json.loads(capsys.readouterr().out)
    assert {"space", "recipe", "objectives", "target"} <= set(search["properties"])
    assert run_cli(["schema", "--search", "--format", "markdown"]) == 2


def test_the_recipe_schema_accepts_bare_and_full_transforms():
    from effkit.schema import json_schema

    items = json_schema()["$defs"]["StageConfig"]["properties"]["transforms"]["items"]["anyOf"]
    assert "multiplex" in items[0]["enum"]
    assert any(option.get("title") == "cofi" for option in items[1:])


# ----------------------------------------------------------------- paths


def _write_csv(path: Path, rows: int, text: str = "text", label: str = "label") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([text, label])
        for i in range(rows):
            topic = "sport" if i % 2 else "money"
            writer.writerow([f"{topic} story number {i} about {topic}", topic])


RELATIVE = textwrap.dedent(
    """\
    name: rel
    model: {source: preset:tiny}
    data: {source: data/train.csv, max_length: 32, text_column: sentence, label_column: topic}
    stages:
      - name: finetune
        train: {steps: 2, batch_size: 8}
      - name: student
        transforms: [{name: distill, teacher: finetune}]
        train: {steps: 1, batch_size: 8}
    evaluate: {splits: [test]}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1}
    """
)


def test_paths_in_a_recipe_are_relative_to_its_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    _write_csv(project / "data" / "train.csv", 40, "sentence", "topic")
    (project / "r.yaml").write_text(RELATIVE, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe("../project/r.yaml")
    assert recipe.data is not None
    assert recipe.data.source == str(project / "data" / "train.csv")
    assert recipe.model.source == "preset:tiny"  # not a path
    student = recipe.stages[1].resolved_plugins()["transforms"][0]
    assert student["teacher"] == "finetune"  # a stage name stays a stage name
    assert run_cli(["validate", "../project/r.yaml"]) == 0
    # a --set value is a command-line path: relative to the working folder
    _write_csv(elsewhere / "mine.csv", 40, "sentence", "topic")
    recipe = load_recipe("../project/r.yaml", ["data.source=mine.csv"])
    assert recipe.data is not None and recipe.data.source == "mine.csv"


def test_relative_path_rules():
    from effkit.paths import resolve_value

    base = Path("/somewhere/recipes")
    assert resolve_value("builtin:bbc-news", base) == "builtin:bbc-news"
    assert resolve_value("bert-base-uncased", base) == "bert-base-uncased"
    assert resolve_value("princeton-nlp/muxbert_base", base) == "princeton-nlp/muxbert_base"
    assert resolve_value("./model", base) == "/somewhere/recipes/model"
    assert resolve_value("../data/x.jsonl", base) == "/somewhere/data/x.jsonl"
    assert resolve_value("data/x.csv", base) == "/somewhere/recipes/data/x.csv"
    assert resolve_value("/abs/x.csv", base) == "/abs/x.csv"
    assert resolve_value(["a.csv", "hub/id"], base) == ["/somewhere/recipes/a.csv", "hub/id"]
    assert resolve_value({"train": "t.parquet"}, base) == {"train": "/somewhere/recipes/t.parquet"}
    assert resolve_value(False, base) is False


def test_a_plugin_text_file_is_relative_to_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "texts.txt").write_text("one line of text\nanother line\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(
            """\
            name: mlm
            model: {source: preset:tiny}
            data: {source: builtin:synthetic, max_length: 32}
            stages:
              - name: prime
                transforms: [{name: multiplex, n: 2}]
                objective: {name: mlm, text_file: texts.txt}
                train: {steps: 1, batch_size: 8}
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(tmp_path / "r.yaml")
    objective = recipe.stages[0].resolved_plugins()["objective"]
    assert objective["text_file"] == str(tmp_path / "texts.txt")
    assert run_cli(["validate", str(tmp_path / "r.yaml")]) == 0


# ----------------------------------------------------------------- eval reads the columns


@pytest.mark.slow
def test_eval_reads_the_columns_the_model_was_trained_on(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    _write_csv(project / "data" / "train.csv", 40, "sentence", "topic")
    (project / "r.yaml").write_text(RELATIVE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["-q", "apply", "project/r.yaml", "--run-dir", str(run), "--no-bench"]
    assert run_cli(args) == 0
    model = run / "stages" / "student" / "model"
    saved = json.loads((model / "effkit.json").read_text(encoding="utf-8"))
    assert saved["data_columns"]["text_column"] == "sentence"
    assert saved["data_columns"]["label_column"] == "topic"
    capsys.readouterr()
    out = tmp_path / "m.json"
    args = ["-q", "eval", str(model), "--data", "project/data/train.csv", "--json", str(out)]
    assert run_cli(args) == 0
    assert "accuracy" in json.loads(out.read_text())["test"]
    assert capsys.readouterr().err == ""  # -q: no bar, no log line
    # the report keeps the task loss and the distilled one on their own panels
    from effkit.report import loss_kinds
    from effkit.runner import Runner

    result = Runner(load_recipe(project / "r.yaml"), run, benchmark=False).run()
    assert list(loss_kinds(result)) == ["task loss", "task loss + distill"]


# ----------------------------------------------------------------- the progress bar


def test_the_bar_is_off_under_quiet_and_without_a_terminal(monkeypatch):
    from effkit import progress
    from effkit.console import switches

    monkeypatch.setattr(switches, "quiet", True)
    assert not progress.Bar(10, "x").drawn
    assert list(progress.track(range(3), 3, "x")) == [0, 1, 2]
    monkeypatch.setattr(switches, "quiet", False)
    assert progress.Bar(10, "x").drawn
    assert not progress.Bar(0, "x").drawn and not progress.Bar(10, "x", enabled=False).drawn


def test_the_shell_completes_commands():
    import os
    import subprocess
    import sys

    env = {**os.environ, "_EFFKIT_COMPLETE": "complete_bash", "COMP_WORDS": "effkit rec",
           "COMP_CWORD": "1"}  # fmt: skip
    script = "import sys; from effkit.cli import app; sys.argv[0] = 'effkit'; app()"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.stdout.split() == ["recipes"], proc.stderr[-1000:]
