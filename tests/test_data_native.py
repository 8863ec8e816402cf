"""Folders the datasets library reads: hub-style snapshots, README configs, save_to_disk folders.

Each kind of folder loads into the same train/validation/test examples as effkit's own files,
a problem in one is a single line naming the folder, and reading leaves the folder as it was.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import datasets
import pydantic
import pytest

from effkit.cli import main
from effkit.data import DataConfig, TaskData, load_task_data
from effkit.data.sources import local_reader
from effkit.errors import DataError
from effkit.preflight import preflight
from effkit.recipe import load_recipe

SEQ = "sequence-classification"
TOK = "token-classification"
SENTIMENT = datasets.ClassLabel(names=["negative", "positive"])


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The datasets cache of these tests, to show that reading a folder writes nothing there."""
    cache = tmp_path_factory.mktemp("hf-datasets-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def table(n: int, *, start: int = 0, text: str = "text", label: Any = None) -> datasets.Dataset:
    """``n`` labelled sentences; ``label``: one class id for every row (else alternating)."""
    ids = [(start + i) % 2 if label is None else label for i in range(n)]
    features = datasets.Features({text: datasets.Value("string"), "label": SENTIMENT})
    rows = {text: [f"{'good' if y == 1 else 'bad'} review {start + i}" for i, y in enumerate(ids)],
            "label": ids}  # fmt: skip
    return datasets.Dataset.from_dict(rows, features=features)


def sizes(data: TaskData) -> dict[str, int]:
    return {name: len(rows) for name, rows in data.splits.items()}


def contents(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size: what reading must leave unchanged."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A hub-style snapshot: parquet shards under data/, named by split, and a plain card."""
    folder = tmp_path / "snapshot"
    (folder / "data").mkdir(parents=True)
    table(30).to_parquet(folder / "data" / "train-00000-of-00002.parquet")
    table(30, start=30).to_parquet(folder / "data" / "train-00001-of-00002.parquet")
    table(10, start=60).to_parquet(folder / "data" / "validation-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# Reviews\n", encoding="utf-8")
    return folder


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A snapshot whose README.md lists two configurations, one of them the default."""
    folder = tmp_path / "configs"
    for name in ("reviews", "short"):
        (folder / name).mkdir(parents=True)
    table(40).to_parquet(folder / "reviews" / "tr.parquet")
    table(8, start=40).to_parquet(folder / "reviews" / "dv.parquet")
    table(6, start=48).to_parquet(folder / "reviews" / "te.parquet")
    table(20, start=100).to_parquet(folder / "short" / "all.parquet")
    card = """\
        ---
        configs:
        - config_name: reviews
          default: true
          data_files:
          - split: train
            path: reviews/tr.parquet
          - split: dev
            path: reviews/dv.parquet
          - split: test
            path: reviews/te.parquet
        - config_name: short
          data_files: short/*.parquet
        ---
        # Two configurations
        """
    (folder / "README.md").write_text(textwrap.dedent(card), encoding="utf-8")
    return folder


@pytest.fixture
def saved_dict(tmp_path: Path) -> Path:
    """A DatasetDict written by save_to_disk, its validation split named 'valid'."""
    folder = tmp_path / "saved-dict"
    splits = {"train": table(40), "valid": table(8, start=40), "test": table(6, start=48)}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


@pytest.fixture
def saved_one(tmp_path: Path) -> Path:
    """A single Dataset written by save_to_disk."""
    folder = tmp_path / "saved-one"
    table(50).save_to_disk(str(folder))
    return folder


# --------------------------------------------------------------------------- what loads


def test_a_hub_snapshot_with_shards_under_data_loads_and_the_test_split_is_carved(
    snapshot: Path, _datasets_cache: Path
) -> None:
    before = contents(snapshot)
    assert local_reader(snapshot, DataConfig(source=str(snapshot))) == "datasets"
    data = load_task_data(DataConfig(source=str(snapshot)), SEQ)
    assert data.labels == ["negative", "positive"]  # the ClassLabel names
    # 60 train rows; validation as given; test carved out of train (0.2 of 0.9 of the shares)
    assert sizes(data) == {"train": 47, "validation": 10, "test": 13}
    assert data.splits["validation"][0]["text"] == "bad review 60"
    assert contents(snapshot) == before
    assert not any(_datasets_cache.rglob("*.arrow"))


def test_a_readme_configs_block_picks_the_default_configuration_and_reads_dev_as_validation(
    configs: Path,
) -> None:
    assert local_reader(configs, DataConfig(source=str(configs))) == "datasets"
    data = load_task_data(DataConfig(source=str(configs)), SEQ)
    assert sizes(data) == {"train": 40, "validation": 8, "test": 6}
    short = load_task_data(DataConfig(source=str(configs), subset="short"), SEQ)
    assert sum(sizes(short).values()) == 20  # one split, carved into three


def test_a_configuration_is_checked_against_the_readme(configs: Path) -> None:
    with pytest.raises(DataError, match=r"no configuration 'shrt' \(data.subset\)") as info:
        load_task_data(DataConfig(source=str(configs), subset="shrt"), SEQ)
    assert "did you mean 'short'" in str(info.value) and info.value.where == str(configs)
    card = (configs / "README.md").read_text(encoding="utf-8")
    (configs / "README.md").write_text(card.replace("  default: true\n", ""), encoding="utf-8")
    with pytest.raises(DataError, match=r"declares 2 configurations \(reviews, short\) and none"):
        load_task_data(DataConfig(source=str(configs)), SEQ)


def test_data_files_patterns_pick_files_and_name_their_splits(snapshot: Path) -> None:
    cfg = DataConfig(
        source=str(snapshot),
        data_files={"train": "data/train-00000-*.parquet", "dev": ["data/validation-*"]},
    )
    assert sizes(load_task_data(cfg, SEQ)) == {"train": 23, "validation": 10, "test": 7}
    one = DataConfig(source=str(snapshot), data_files="data/train-*.parquet")
    assert sum(sizes(load_task_data(one, SEQ)).values()) == 60  # all of it is train
    none = DataConfig(source=str(snapshot), data_files={"train": "data/*.csv"})
    with pytest.raises(DataError, match=r"data\.data_files matches no data files") as info:
        load_task_data(none, SEQ)
    assert "data/" in str(info.value)  # the folder's listing


def test_a_save_to_disk_dataset_dict_loads_with_valid_as_validation(saved_dict: Path) -> None:
    before = contents(saved_dict)
    assert local_reader(saved_dict, DataConfig(source=str(saved_dict))) == "saved"
    data = load_task_data(DataConfig(source=str(saved_dict)), SEQ, labels=["negative", "positive"])
    assert sizes(data) == {"train": 40, "validation": 8, "test": 6}
    assert data.splits["test"][0] == {"text": "bad review 48", "text_pair": None, "label": 0}
    assert contents(saved_dict) == before  # no cache files next to the arrow files


def test_a_single_saved_dataset_is_the_train_split(saved_one: Path) -> None:
    assert local_reader(saved_one, DataConfig(source=str(saved_one))) == "saved"
    data = load_task_data(DataConfig(source=str(saved_one)), SEQ)
    assert sizes(data) == {"train": 35, "validation": 5, "test": 10}


def test_a_saved_token_dataset_brings_its_tag_names(tmp_path: Path) -> None:
    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-per", "I-per"]))
    features = datasets.Features({"words": datasets.Sequence(datasets.Value("string")),
                                  "ner": tags})  # fmt: skip
    rows = {"words": [["Anna", "Lee", "sings"]] * 12, "ner": [[1, 2, 0]] * 12}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ner"))
    cfg = DataConfig(source=str(tmp_path / "ner"), tokens_column="words", tags_column="ner")
    data = load_task_data(cfg, TOK)
    assert data.labels == ["O", "B-per", "I-per"]
    assert data.splits["train"][0] == {"tokens": ["Anna", "Lee", "sings"], "tags": [1, 2, 0]}


def test_folders_of_plain_split_files_stay_with_effkits_reader(tmp_path: Path) -> None:
    (tmp_path / "train.conll").write_text("John B-per\nruns\n", encoding="utf-8")
    (tmp_path / "prepare.py").write_text("raise SystemExit\n", encoding="utf-8")  # never run
    (tmp_path / "README.md").write_text("---\nconfigs: [\n---\n", encoding="utf-8")  # not YAML
    assert local_reader(tmp_path, DataConfig(source=str(tmp_path))) == "files"
    with pytest.raises(DataError, match="line 2 has no tag"):
        load_task_data(DataConfig(source=str(tmp_path)), TOK)


# --------------------------------------------------------------------------- what is refused


def test_a_folder_with_a_loading_script_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    folder.mkdir()
    (folder / "scripted.py").write_text("raise SystemExit('ran')\n", encoding="utf-8")
    (folder / "data.jsonl").write_text('{"text": "a", "label": 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset loading script \(scripted.py\)") as info:
        load_task_data(DataConfig(source=str(folder)), SEQ)
    assert info.value.where == str(folder) and "runs no dataset code" in str(info.value)
    with pytest.raises(DataError, match="is a Python file"):
        load_task_data(DataConfig(source=str(folder / "scripted.py")), SEQ)


def test_a_readme_header_that_is_not_yaml_is_named(snapshot: Path) -> None:
    (snapshot / "README.md").write_text("---\nconfigs: [\n---\n# card\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"the YAML header of README\.md cannot be read") as info:
        load_task_data(DataConfig(source=str(snapshot)), SEQ)
    assert info.value.where == str(snapshot) and "\n" not in str(info.value)


def test_a_missing_column_names_the_folder_the_split_and_the_columns(tmp_path: Path) -> None:
    folder = tmp_path / "reviews"
    datasets.DatasetDict({"train": table(20, text="sentence")}).save_to_disk(str(folder))
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(folder)), SEQ)
    message = str(info.value)
    assert message.startswith(f"{folder} [train]: no column 'text' (data.text_column)")
    assert "the columns are: sentence, label" in message and "\n" not in message
    data = load_task_data(DataConfig(source=str(folder), text_column="sentence"), SEQ)
    assert len(data.splits["train"]) == 14


def test_labels_outside_the_task_and_an_empty_split_are_one_line(
    snapshot: Path, saved_dict: Path
) -> None:
    table(0).to_parquet(snapshot / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(snapshot)), SEQ)
    assert str(info.value) == f"{snapshot} [test]: the test split is empty"
    saved = snapshot.parent / "saved-empty"
    datasets.DatasetDict({"train": table(20), "dev": table(0)}).save_to_disk(str(saved))
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(saved)), SEQ)
    assert str(info.value) == f"{saved} [dev]: the dev split is empty"
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(saved_dict)), SEQ, labels=["pos", "neg"])
    assert str(info.value).startswith(
        f"{saved_dict} [train]: split 'train', row 0: label 'negative' is not one of the task's"
    )


def test_a_split_the_recipe_names_must_exist(saved_dict: Path) -> None:
    cfg = DataConfig(source=str(saved_dict), validation_split="dev")
    with pytest.raises(DataError, match=r"no split 'dev' \(data.validation_split\); the splits"):
        load_task_data(cfg, SEQ)
    cfg = DataConfig(source=str(saved_dict), train_split="training")
    with pytest.raises(DataError, match=r"no split 'training' \(data.train_split\)"):
        load_task_data(cfg, SEQ)


def test_folders_the_datasets_library_cannot_read(tmp_path: Path, saved_dict: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.xyz").write_text("nothing here", encoding="utf-8")
    with pytest.raises(DataError, match=r"no train file .* and no data files") as info:
        load_task_data(DataConfig(source=str(junk)), SEQ)
    assert "notes.xyz" in str(info.value) and info.value.where == str(junk)
    for arrow in (saved_dict / "test").glob("*.arrow"):
        arrow.unlink()
    with pytest.raises(DataError, match=r"the save_to_disk folder \(DatasetDict\) cannot be read"):
        load_task_data(DataConfig(source=str(saved_dict)), SEQ)


def test_options_that_do_not_apply_are_refused(saved_one: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.subset does not apply to a save_to_disk folder"):
        load_task_data(DataConfig(source=str(saved_one), subset="x"), SEQ)
    (tmp_path / "one.csv").write_text("text,label\na,x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.data_files picks part of a folder"):
        load_task_data(DataConfig(source=str(tmp_path / "one.csv"), data_files="*.csv"), SEQ)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.csv").write_text("text,label\na,x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"README\.md declares no configs"):
        load_task_data(DataConfig(source=str(plain), subset="sst2"), SEQ)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data_files": []}, "empty list"),
        ({"data_files": {}}, "empty mapping"),
        ({"data_files": {"train": " "}}, "empty pattern"),
        ({"data_files": 3}, "data_files"),
        ({"source": "builtin:synthetic", "data_files": "*.csv"}, "builtin data set"),
    ],
)
def test_data_files_are_validated_with_the_recipe(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        DataConfig.model_validate({"source": "./x", **fields})


# --------------------------------------------------------------------------- a recipe on it

RECIPE = textwrap.dedent(
    """\
    name: saved-data
    model: {source: preset:tiny}
    task: {type: sequence-classification}
    data: {source: SOURCE, max_length: 32}
    stages:
      - name: finetune
        train: {steps: 2, batch_size: 8, eval_every: 2, checkpoint_every: 2}
    benchmark: {enabled: false}
    """
)


def test_a_recipe_validates_and_trains_on_a_save_to_disk_folder(
    saved_dict: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe_file = tmp_path / "saved.yaml"
    recipe_file.write_text(RECIPE.replace("SOURCE", saved_dict.name), encoding="utf-8")
    checked = preflight(load_recipe(recipe_file))
    assert checked.data is not None and sizes(checked.data) == {
        "train": 40, "validation": 8, "test": 6}  # fmt: skip
    assert "saved-dict: train 40, validation 8, test 6; 2 labels" in checked.summary()
    main(["-q", "validate", str(recipe_file)])
    out = capsys.readouterr().out.replace("\n", " ")
    assert "valid (1 stage(s) to run, 2 training steps" in out
    assert "train 40, validation 8, test 6; 2 labels" in out
    before = contents(saved_dict)
    main(["-q", "apply", str(recipe_file), "--run-dir", str(tmp_path / "run"), "--no-bench"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert "validation" in json.dumps(metrics) and "test" in json.dumps(metrics)
    assert (tmp_path / "run" / "report.md").is_file()
    assert contents(saved_dict) == before


def test_validate_refuses_a_bad_column_in_one_line(
    saved_dict: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text(RECIPE.replace("SOURCE", saved_dict.name), encoding="utf-8")
    for command in (["validate", str(recipe_file)],
                    ["apply", str(recipe_file), "--run-dir", str(tmp_path / "run")]):  # fmt: skip
        with pytest.raises(SystemExit) as code:
            main(["-q", *command, "--set", "data.text_column=review"])
        assert code.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "saved-dict [train]: no column 'review' (data.text_column)" in err
    assert not (tmp_path / "run").exists()
