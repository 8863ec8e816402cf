"""Token classification with any tag set: entity schemes scored as entities, other tag sets
(part of speech, entity types without B-/I-) by token accuracy, under every stack."""

from __future__ import annotations

import textwrap

import pytest

from effkit import DataError, RecipeError
from effkit.data import DataConfig, load_task_data
from effkit.metrics import detect_scheme, scheme_problem, token_metrics
from effkit.preflight import preflight
from effkit.recipe import parse_recipe
from effkit.runner import run
from effkit.task import Task

POS = [("The", "DT"), ("cat", "NN"), ("sat", "VBD"), ("on", "IN"), ("the", "DT"), ("mat", "NN")]


def write_pos(path, sentences: int = 40, extra: str = "") -> str:
    path.write_text("".join("\n".join(f"{w} {t}" for w, t in POS) + "\n\n"
                            for _ in range(sentences)) + extra, encoding="utf-8")  # fmt: skip
    return str(path)


TAIL = """\
evaluate: {splits: [validation, test]}
benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1, threads: 1}
"""


def recipe_text(source: str, *, stages: str = "", task: str = "{type: token-classification}"):
    head = textwrap.dedent(
        f"""\
        name: tags
        model: {{source: preset:tiny}}
        task: {task}
        data: {{source: {source}, max_length: 24}}
        stages:
          - name: finetune
            train: {{steps: 2, batch_size: 8, eval_every: 1}}
        """
    )
    return head + textwrap.indent(stages, "  ") + TAIL


def test_the_scheme_is_read_from_the_tag_set():
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "bio"
    assert detect_scheme(["O", "B-LOC", "E-LOC", "S-PER", "I-LOC"]) == "bioes"
    assert detect_scheme(["DT", "NN", "IN", "VBD"]) is None
    assert detect_scheme(["O", "person", "geo-loc"]) is None
    assert detect_scheme(["O"]) is None  # nothing but the outside is no entity scheme
    assert scheme_problem("E-PER", "bio") is not None and scheme_problem("E-PER", "bioes") is None
    assert Task(type="token-classification", labels=["DT", "NN"]).primary_metric() == (
        "token_accuracy")  # fmt: skip
    assert Task(type="token-classification", labels=["O", "B-x"]).primary_metric() == "entity_f1"
    forced = Task(type="token-classification", labels=["O", "B-x"], tag_scheme="none")
    assert forced.primary_metric() == "token_accuracy"
    assert "entity_f1" not in forced.metric_names()


def test_plain_tags_get_token_accuracy_macro_f1_and_per_tag_f1():
    gold = [["DT", "NN", "VBD"], ["IN", "DT", "NN"]]
    pred = [["DT", "NN", "NN"], ["IN", "DT", "NN"]]
    out = token_metrics(pred, gold, entities=False)
    assert out["token_accuracy"] == pytest.approx(5 / 6)
    assert out["f1/VBD"] == 0.0 and out["f1/DT"] == 1.0
    assert out["f1/NN"] == pytest.approx(0.8)  # 2 right of 3 predicted, 2 of 2 gold
    assert out["token_f1_macro"] == pytest.approx((1 + 0.8 + 0 + 1) / 4)
    assert not any(key.startswith("entity_") for key in out)
    assert "token_f1_macro" in token_metrics([["B-x", "O"]], [["B-x", "O"]])  # entity tags too


def test_a_pos_file_validates_and_is_ranked_by_token_accuracy(tmp_path):
    source = write_pos(tmp_path / "pos.conll")
    found = preflight(parse_recipe(recipe_text(source)))
    summary = found.summary()
    assert "plain tags (no entity scheme)" in summary and "ranked by token_accuracy" in summary
    assert found.data is not None and found.data.labels == ["DT", "IN", "NN", "VBD"]


def test_a_forced_entity_scheme_refuses_other_tags_where_the_recipe_says_so(tmp_path):
    source = write_pos(tmp_path / "pos.conll")
    text = recipe_text(source, task="{type: token-classification, tag_scheme: bio}")
    with pytest.raises(DataError, match=r"tag 'DT' is not a BIO entity tag") as caught:
        preflight(parse_recipe(text))
    assert "task.tag_scheme" in str(caught.value)
    bioes = tmp_path / "bioes.conll"
    bioes.write_text("Ann S-PER\nsaw O\nNew B-LOC\nYork E-LOC\n\n" * 30, encoding="utf-8")
    text = recipe_text(str(bioes), task="{type: token-classification, tag_scheme: bio}")
    with pytest.raises(DataError, match=r"'E-' is not a BIO prefix \(expected O or B/I-\)"):
        preflight(parse_recipe(text))
    text = recipe_text(str(bioes), task="{type: token-classification, tag_scheme: bioes}")
    assert "BIOES entity tags" in preflight(parse_recipe(text)).summary()


def test_a_tag_train_lacks_is_refused_unless_task_labels_lists_every_tag(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_pos(folder / "train.conll")
    write_pos(folder / "validation.conll", 4)
    write_pos(folder / "test.conll", 4, extra="Run VB\nnow RB\n\n")
    with pytest.raises(DataError, match=r"tag 'VB' does not occur in the train split") as caught:
        load_task_data(DataConfig(source=str(folder)), "token-classification")
    assert "task.labels" in str(caught.value)
    every = ["DT", "IN", "NN", "RB", "VB", "VBD"]
    data = load_task_data(DataConfig(source=str(folder)), "token-classification", every)
    assert data.labels == every


def test_entity_types_without_prefixes_are_a_shipped_plain_tag_task():
    data = load_task_data(DataConfig(source="builtin:wnut16-types"), "token-classification")
    assert "person" in data.labels and "O" in data.labels
    assert not any(tag.startswith(("B-", "I-")) for tag in data.labels)
    assert Task(type="token-classification", labels=data.labels).entity_scheme() is None
    wnut = load_task_data(DataConfig(source="builtin:wnut16"), "token-classification")
    assert sum(len(s) for s in data.splits.values()) == sum(len(s) for s in wnut.splits.values())


@pytest.mark.slow
def test_plain_tags_train_under_multiplexing_pruning_and_distillation(tmp_path):
    source = write_pos(tmp_path / "pos.conll", 60)
    stages = textwrap.dedent(
        """\
        - name: prune
          transforms:
            - {name: cofi, sparsity: 0.3, hidden: false}
            - {name: distill, teacher: finetune, layer_map: none}
          train: {steps: 2, batch_size: 8, eval_every: 1}
        """
    )
    text = recipe_text(source, stages=stages).replace(
        "    train: {steps: 2, batch_size: 8, eval_every: 1}\n  - name: prune",
        "    transforms: [{name: multiplex, n: 2}]\n"
        "    train: {steps: 2, batch_size: 8, eval_every: 1}\n  - name: prune",
    )
    result = run(parse_recipe(text), tmp_path / "run", progress=False)
    for split in ("validation", "test"):
        assert {"token_accuracy", "token_f1_macro"} <= set(result.metrics[split])
        assert "entity_f1" not in result.metrics[split]


def test_a_search_on_plain_tags_aims_at_token_accuracy(tmp_path):
    from effkit.pareto.base import check, goal_metric
    from effkit.pareto.spec import load_spec

    (tmp_path / "base.yaml").write_text(recipe_text(write_pos(tmp_path / "pos.conll")))
    spec = textwrap.dedent(
        """\
        name: tag-search
        recipe: base.yaml
        space:
          steps: {field: stages.finetune.train.steps, choices: [1, 2]}
        target: TARGET
        """
    )
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "0.5"))
    base = check(load_spec(tmp_path / "spec.yaml"))
    assert goal_metric(load_spec(tmp_path / "spec.yaml"), base) == "token_accuracy"
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "token_f1_macro >= 0.5"))
    check(load_spec(tmp_path / "spec.yaml"))
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "entity_f1 >= 0.5"))
    with pytest.raises(RecipeError, match=r"plain tags, no entity scheme\) reports no metric"):
        check(load_spec(tmp_path / "spec.yaml"))


def test_validate_prints_the_metric_that_ranks(tmp_path, capsys):
    from effkit.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(write_pos(tmp_path / "pos.conll")), encoding="utf-8")
    main(["validate", str(path)])
    assert "ranked by token_accuracy" in capsys.readouterr().out
