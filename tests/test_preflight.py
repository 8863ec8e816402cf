"""The preflight: a bad recipe is refused by validate and by apply before anything is written."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from effkit.cli import main
from effkit.errors import EffkitError
from effkit.preflight import preflight, unneeded_stages
from effkit.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).parents[1]
SAVED = ROOT / "tests" / "fixtures" / "saved" / "v1"

BASE = textwrap.dedent(
    """\
    name: pre
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 32}
    stages:
      - name: finetune
        train: {steps: 4, batch_size: 8}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1}
    """
)

# (case, overrides, expected message) on BASE; files below live in the test's folder (DIR)
CASES = [
    ("missing data file", ["data.source=DIR/none.csv"], r"DIR/none.csv: no such file"),
    ("wrong text column", ["data.source=DIR/other.csv"], r"no column 'text' \(data.text_column\)"),
    ("a JSON list of numbers", ["data.source=DIR/nums.json"], r"holds int values, not one object"),
    ("a CSV with an open quote", ["data.source=DIR/bad.csv"], r"could not read the file as csv"),
    ("a cut JSON lines file", ["data.source=DIR/bad.jsonl"], r"could not read the file as json"),
    ("label outside the task", ["data.source=DIR/train.csv", "task.labels=[a]"], r"'b'"),
    (
        "missing model folder",
        ["model.source=./no-such-model"],
        r"model folder './no-such-model' does not exist",
    ),
    ("folder without config", ["model.source=DIR/empty-model"], r"has no config.json"),
    ("truncated weights", ["model.source=DIR/cut-model"], r"not a complete safetensors file"),
    ("a file as model", ["model.source=DIR/train.csv"], r"is a file; expected a folder"),
    ("hub id offline", ["model.source=nobody-here/no-model"], r"cannot read the config of model"),
    ("missing tokenizer", ["model.tokenizer=./no-tokenizer"], r"tokenizer folder"),
    ("max_length", ["data.max_length=100000"], r"data.max_length: 100000 tokens per input"),
    ("bench seq_len", ["benchmark.seq_len=100000"], r"benchmark.seq_len: 100000 tokens"),
    ("device cuda:7", ["benchmark.device=cuda:7"], r"device 'cuda:7'"),
    ("device tpu", ["benchmark.device=tpu"], r"unknown device 'tpu'"),
    (
        "unknown baseline",
        ["benchmark.baseline=nothing"],
        r"benchmark.baseline: 'nothing' is neither an earlier stage",
    ),
    (
        "keep-layers out of range",
        ["stages.finetune.transforms=[{name: keep-layers, layers: [0, 5]}]"],
        r"keep-layers: layer 5 does not exist; the model has 2 layers",
    ),
    (
        "mix_after out of range",
        ["stages.finetune.transforms=[{name: multiplex, mix_after: 2}]"],
        r"mix_after=2 leaves no layer",
    ),
    (
        "multiplex twice",
        ["stages.finetune.transforms=[multiplex, {name: keep-layers, layers: [0]}, multiplex]"],
        r"already taken over by 'multiplex'",
    ),
    (
        "mux objective without multiplex",
        ["stages.finetune.objective=mux-task"],
        r"objective 'mux-task' trains a multiplexed model",
    ),
    (
        "missing text file",
        [
            "stages.finetune.transforms=[multiplex]",
            "stages.finetune.objective={name: retrieval, text_file: DIR/no.txt}",
        ],
        r"text file '.*no.txt' does not exist",
    ),
    (
        "teacher that does not exist",
        ["stages.finetune.transforms=[{name: distill, teacher: tea}]"],
        r"'tea' is neither an earlier stage of this recipe nor a model folder",
    ),
    (
        "teacher layer out of range",
        ["stages.finetune.transforms=[{name: distill, teacher: initial, teacher_layers: [0, 7]}]"],
        r"teacher layer 7 does not exist; the teacher has 2 layers",
    ),
    (
        "precision then quantize",
        ["stages.finetune.transforms=[{name: precision}, quantize]"],
        r"quantize: the model is stored in bf16",
    ),
    (
        "quantize then precision",
        ["stages.finetune.transforms=[quantize, {name: precision}]"],
        r"precision: the model holds int8 weights",
    ),
]


def files(folder: Path) -> None:
    (folder / "train.csv").write_text("text,label\n" + "".join(
        f"sentence {i},{'ab'[i % 2]}\n" for i in range(40)))  # fmt: skip
    (folder / "other.csv").write_text("sentence,label\nhello,a\nworld,b\n")
    (folder / "nums.json").write_text("[1, 2, 3]")
    (folder / "bad.csv").write_text('text,label\n"unclosed,a\nx,b\n')
    (folder / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n')
    (folder / "empty-model").mkdir()
    cut = folder / "cut-model"
    shutil.copytree(SAVED / "cofi", cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.fixture
def place(tmp_path, monkeypatch):
    files(tmp_path)
    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", cache)
    return tmp_path


def overridden(overrides: list[str], folder: Path) -> list[str]:
    return [o.replace("DIR", str(folder)) for o in overrides]


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_bad_recipe_is_refused_by_validate_and_by_apply_before_anything_is_written(
    place, capsys, overrides, message
):
    sets = overridden(overrides, place)
    with pytest.raises(EffkitError, match=message.replace("DIR", str(place))):
        preflight(parse_recipe(BASE, source="pre.yaml", overrides=sets))
    recipe_file = place / "pre.yaml"
    recipe_file.write_text(BASE)
    args = [a for s in sets for a in ("--set", s)]
    for command in (["validate", str(recipe_file)],
                    ["apply", str(recipe_file), "--run-dir", str(place / "run")]):  # fmt: skip
        with pytest.raises(SystemExit) as code:
            main(["-q", *command, *args])
        assert code.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (place / "run").exists()
    assert not (place / "hf-datasets").exists() or not any((place / "hf-datasets").rglob("*.arrow"))


def test_errors_name_the_recipe_line(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(BASE.replace("train: {steps: 4, batch_size: 8}", textwrap.dedent(
        """\
        transforms:
              - {name: keep-layers, layers: [0, 9]}
            train: {steps: 4, batch_size: 8}""")))  # fmt: skip
    with pytest.raises(EffkitError) as caught:
        preflight(load_recipe(recipe_file))
    assert str(caught.value).startswith(
        f"{recipe_file}:7: stages[finetune].transforms[keep-layers]"
    )


def test_tags_that_are_not_entities_are_refused_up_front_only_under_an_entity_scheme(tmp_path):
    conll = tmp_path / "train.conll"
    conll.write_text("".join("The DT\ncat NN\nsat VBD\n\n" for _ in range(30)))
    text = BASE.replace("{source: builtin:synthetic, max_length: 32}",
                        f"{{source: {conll}, max_length: 32}}")  # fmt: skip
    text = text.replace("name: pre", "name: pre\ntask: {type: token-classification}")
    assert "ranked by token_accuracy" in preflight(parse_recipe(text)).summary()
    with pytest.raises(EffkitError, match=r"tag 'DT' is not a BIOES entity tag"):
        preflight(parse_recipe(text, overrides=["task.tag_scheme=bioes"]))


def with_stage(stage: str, text: str = BASE) -> str:
    return text.replace("benchmark:", stage + "benchmark:")


def test_contextual_multiplexing_and_hidden_pruning_are_refused_in_either_order():
    two = with_stage("  - name: prune\n    transforms: [cofi]\n    train: {steps: 4}\n")
    mux = ["stages.finetune.transforms=[{name: multiplex, mux: contextual}]"]
    with pytest.raises(EffkitError, match=r"cofi: hidden-dimension pruning cannot work here"):
        preflight(parse_recipe(two, overrides=mux))
    preflight(parse_recipe(two, overrides=[*mux, "stages.prune.transforms.cofi.hidden=false"]))
    same = ["stages.finetune.transforms=[cofi, {name: multiplex, mux: contextual}]"]
    with pytest.raises(EffkitError, match=r"'cofi' in this stage prunes hidden dimensions"):
        preflight(parse_recipe(BASE, overrides=same))


def test_a_half_precision_model_is_not_trained_by_a_later_stage():
    two = BASE.replace("train: {steps: 4, batch_size: 8}",
                       "transforms: [precision]\n    train: {steps: 4, batch_size: 8}")  # fmt: skip
    two = with_stage("  - name: more\n    train: {steps: 4, batch_size: 8}\n", two)
    with pytest.raises(EffkitError, match=r"stage 'more' would train weights stored in bf16"):
        preflight(parse_recipe(two))


def test_a_saved_model_brings_its_history_to_the_checks():
    facts = preflight(parse_recipe(BASE, overrides=[f"model.source={SAVED / 'mux2-keep-layers'}"]))
    assert facts.model.forward_by == "multiplex" and facts.model.group_size == 2
    with pytest.raises(EffkitError, match="already taken over"):
        saved = f"model.source={SAVED / 'mux2-keep-layers'}"
        preflight(parse_recipe(BASE, overrides=[saved, "stages.finetune.transforms=[multiplex]"]))


UNUSED = textwrap.dedent(
    """\
    name: unused
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 32, limit: 32}
    stages:
      - name: finetune
        train: {steps: 2, batch_size: 8}
      - name: oneshot
        transforms: [{name: oneshot-prune, ratio: 0.5}]
        train: {steps: 0}
      - name: student
        from: finetune
        train: {steps: 2, batch_size: 8}
    benchmark: {enabled: false}
    """
)


def test_a_listed_stage_the_last_one_does_not_need_is_reported_by_validate_and_apply(
    tmp_path, capsys, caplog
):
    recipe = parse_recipe(UNUSED)
    assert list(unneeded_stages(recipe)) == ["oneshot"]
    from effkit.runner import run

    with caplog.at_level("WARNING"):  # before main(), which sets up logging of its own
        run(recipe, tmp_path / "run", progress=False)
    assert "stage 'oneshot' is listed but not run" in caplog.text
    file = tmp_path / "unused.yaml"
    file.write_text(UNUSED)
    main(["validate", str(file)])
    out = capsys.readouterr().out
    assert "2 stage(s) to run, 4 training steps" in out
    assert "stage 'oneshot' is listed but not run: the last stage 'student' does not need it " \
           "('student' starts from 'finetune')" in out.replace("\n", " ")  # fmt: skip
    assert not (tmp_path / "run" / "stages" / "oneshot").exists()


def test_the_preflight_of_every_shipped_recipe_takes_seconds():
    from effkit.pareto.spec import is_search_spec

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if is_search_spec(path):
            continue
        recipe = load_recipe(path)
        sources = [recipe.model.source, recipe.data.source if recipe.data else "builtin:"]
        if any(not s.startswith(("builtin:", "preset:")) and not Path(s).exists() for s in sources):
            continue  # a model or data set on the Hugging Face hub (offline here)
        began = time.perf_counter()
        checked = preflight(recipe)
        assert time.perf_counter() - began < 30, path
        assert checked.data is not None and checked.notes == []
