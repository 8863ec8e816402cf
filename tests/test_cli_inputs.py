"""``effkit predict`` reads texts, sentence pairs (tab-separated or JSON lines) and refuses what
it cannot read with the line; ``effkit eval`` takes inference seeds and ensembling as a recipe's
evaluate section does."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from effkit import load, load_model, save
from effkit.cli import main
from effkit.console import switches
from effkit.data import DataConfig, load_task_data
from effkit.inference import evaluate_seeds, set_ensemble
from effkit.runner import stack
from effkit_mux import Multiplex

DATA = ["--data", "builtin:synthetic", "--set", "limit=60"]
SYNTHETIC = DataConfig(source="builtin:synthetic", limit=60)


def cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = ""
) -> tuple[int, str, str]:
    switches.debug = False
    before, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.stdin = before
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = load_model("preset:tiny", labels=["alpha", "beta", "gamma"])
    model.data_columns = {"text_column": "sentence", "text_pair_column": "hypothesis"}
    return save(model, tmp_path_factory.mktemp("plain") / "m")


@pytest.fixture(scope="module")
def muxed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = stack(load_model("preset:tiny", labels=["alpha", "beta", "gamma"]),
                  [Multiplex(n=3)])  # fmt: skip
    return save(model, tmp_path_factory.mktemp("mux") / "m")


def rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


# ----------------------------------------------------------------- predict: sentence pairs


def test_a_model_trained_on_pairs_reads_tab_separated_pairs(plain, capsys):
    lines = ["a cat sits\tan animal sits", "rain falls\tit is dry"]
    code, out, err = cli(["predict", str(plain)], capsys, "\n".join(lines) + "\n")
    assert code == 0, err
    got = rows(out)
    assert [(r["text"], r["text_pair"]) for r in got] == [tuple(x.split("\t")) for x in lines]
    model = load(plain)
    expected = model.predict(["a cat sits", "rain falls"], pairs=["an animal sits", "it is dry"])
    assert [r["label"] for r in got] == [e["label"] for e in expected]
    assert [r["scores"] for r in got] == [e["scores"] for e in expected]
    alone = model.predict(["a cat sits", "rain falls"])  # the pair reached the model
    assert [r["scores"] for r in got] != [a["scores"] for a in alone]


def test_json_lines_take_the_model_s_columns_or_named_fields(plain, capsys, tmp_path):
    file = tmp_path / "inputs.jsonl"
    file.write_text('{"sentence": "a cat sits", "hypothesis": "an animal sits"}\n'
                    '{"sentence": "rain falls", "hypothesis": "it is dry", "id": 7}\n')  # fmt: skip
    code, out, err = cli(["predict", str(plain), "--input", str(file)], capsys)
    assert code == 0, err
    assert [r["text_pair"] for r in rows(out)] == ["an animal sits", "it is dry"]
    other = tmp_path / "other.txt"
    other.write_text('{"q": "first", "a": "second"}\n')
    code, out, err = cli(["predict", str(plain), "-i", str(other), "--format", "jsonl",
                          "--text-field", "q", "--pair-field", "a"], capsys)  # fmt: skip
    assert code == 0, err
    assert rows(out)[0]["text"] == "first" and rows(out)[0]["text_pair"] == "second"


def test_plain_lines_are_single_texts_even_for_a_pair_model(plain, capsys):
    code, out, err = cli(["predict", str(plain), "--format", "lines"], capsys, "one\ttwo\n")
    assert code == 0, err
    assert rows(out)[0]["text"] == "one\ttwo" and "text_pair" not in rows(out)[0]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ([], "first\tpair\nno tab here\n", "standard input:2: expected a text and its pair"),
        (["--format", "tsv"], "a\tb\tc\n", "standard input:1: expected a text and its pair"),
        (["--format", "jsonl"], '{"sentence": "x"}\n[1, 2]\n', "standard input:2: expected a JSON"),
        (["--format", "jsonl"], "{not json\n", "standard input:1: not a JSON object"),
        (["--format", "jsonl"], '{"text": "x"}\n', "no text field 'sentence'"),
        (["--format", "jsonl"], '{"sentence": "x", "hypothesis": 3}\n', "is not a string"),
        (["--format", "jsonl"], '{"sentence": "x", "hypothesis": "y"}\n{"sentence": "z"}\n',
         "standard input:2: this input has no pair"),
        (["--format", "yaml"], "x\n", "'yaml' is not one of"),
    ],
)  # fmt: skip
def test_input_that_cannot_be_read_names_its_line(plain, capsys, args, stdin, message):
    code, out, err = cli(["predict", str(plain), *args], capsys, stdin)
    assert code == 2 and out == ""
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err


def test_a_token_model_refuses_pairs(capsys, tmp_path):
    model = save(load_model("preset:tiny", task="token-classification", labels=["O", "B-X", "I-X"]),
                 tmp_path / "tok")  # fmt: skip
    code, _, err = cli(["predict", str(model), "--format", "tsv"], capsys, "a b\tc d\n")
    assert code == 2 and "token task reads one text per input" in err


# ----------------------------------------------------------------- eval: seeds and ensembling


def test_eval_with_inference_seeds_reports_the_mean_and_spread(muxed, capsys, tmp_path):
    out_file = tmp_path / "m.json"
    code, _, err = cli(["-q", "eval", str(muxed), *DATA, "--inference-seed", "0",
                          "--inference-seed", "1", "--json", str(out_file)], capsys)  # fmt: skip
    assert code == 0, err
    saved = json.loads(out_file.read_text())
    assert set(saved["per_seed"]["test"]) == {"0", "1"}
    accuracies = [saved["per_seed"]["test"][s]["accuracy"] for s in ("0", "1")]
    assert saved["test"]["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert "accuracy_std" in saved["test"]
    # the same figures as the API gives
    model = load(muxed)
    data = load_task_data(SYNTHETIC, "sequence-classification", model.task.labels)
    metrics, _ = evaluate_seeds(model, data.splits["test"], [0, 1])
    assert metrics["accuracy"] == pytest.approx(saved["test"]["accuracy"])


def test_eval_ensembles_k_of_n_slots(muxed, capsys, tmp_path):
    files = {}
    for k in (1, 2, 3):
        files[k] = tmp_path / f"k{k}.json"
        code, _, err = cli(["-q", "eval", str(muxed), *DATA, "--ensemble", str(k),
                            "--json", str(files[k])], capsys)  # fmt: skip
        assert code == 0, err
    model = load(muxed)
    data = load_task_data(SYNTHETIC, "sequence-classification", model.task.labels)
    for k, file in files.items():
        set_ensemble(model, k)
        metrics, _ = evaluate_seeds(model, data.splits["test"], [])
        assert json.loads(file.read_text())["test"] == pytest.approx(metrics)


@pytest.mark.parametrize(
    ("which", "args", "message"),
    [
        ("muxed", ["--ensemble", "4"], "the model groups N=3 inputs; give 1 to 3"),
        ("muxed", ["--ensemble", "0"], "--ensemble"),
        ("plain", ["--ensemble", "2"], "ensembling needs a multiplexed model"),
        ("muxed", ["--inference-seed", "1", "--inference-seed", "1"], "a seed is given twice"),
        ("muxed", ["--inference-seed", "x"], "--inference-seed"),
    ],
)
def test_bad_eval_options_are_one_message(request, capsys, which, args, message):
    code, _, err = cli(["eval", str(request.getfixturevalue(which)), *DATA, *args], capsys)
    assert code == 2 and message in " ".join(err.split()), err
    assert "Traceback" not in err
