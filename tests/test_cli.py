"""The command line: each command works, and bad input gives one message and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def effkit(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "effkit.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of the tiny recipe, made once through the CLI."""
    folder = tmp_path_factory.mktemp("cli") / "run"
    env_cache = tmp_path_factory.mktemp("cache")
    os.environ["EFFKIT_CACHE"] = str(env_cache)
    proc = effkit("--quiet", "apply", "tests/recipes/tiny.yaml", "--run-dir", str(folder),
                  "--set", "stages.finetune.train.steps=10")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and "accuracy" in proc.stdout
    return folder


def test_apply_writes_a_report(trained):
    assert (trained / "report.md").is_file()


def test_validate_and_plugins_and_schema():
    proc = effkit("validate", "recipes/quickstart.yaml")
    assert proc.returncode == 0 and "valid" in proc.stdout
    # a search spec is checked as a search spec, not refused as a recipe with unknown fields
    proc = effkit("validate", "recipes/pareto_search.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "search spec, valid (4 parameters" in proc.stdout
    proc = effkit("plugins")
    assert proc.returncode == 0 and "keep-layers" in proc.stdout and "task" in proc.stdout
    proc = effkit("schema")
    assert proc.returncode == 0 and json.loads(proc.stdout)["title"] == "Recipe"


def test_predict_reads_stdin_and_writes_json_lines_in_order(trained):
    model = trained / "stages" / "finetune" / "model"
    texts = ["the first input", "second", "and the third input here"]
    proc = effkit("predict", str(model), stdin="\n".join(texts) + "\n")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert all(r["label"] in {"alpha", "beta", "gamma"} for r in rows)


def test_predict_refuses_input_that_is_not_text(trained, tmp_path):
    model = str(trained / "stages" / "finetune" / "model")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [
        (["-i", str(latin1)], None, "not UTF-8 text: byte 0xe9 at offset 14 (line 2)"),
        (["-i", str(binary)], None, "binary data: a NUL byte at offset 0"),
        (["-i", str(tmp_path)], None, "is a folder; give a text file"),
        ([], "\x00\x01 bytes", "standard input: binary data"),
    ]
    for args, stdin, expected in cases:
        proc = effkit("predict", model, *args, stdin=stdin)
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_eval_scores_a_saved_model(trained, tmp_path):
    model = trained / "stages" / "finetune" / "model"
    proc = effkit("eval", str(model), "--data", "builtin:synthetic", "--split", "test",
                  "--json", str(tmp_path / "m.json"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # a data option that does not exist is one line naming it, as a recipe's --set would be
    proc = effkit("eval", str(model), "--data", "builtin:synthetic", "--set", "colour=red")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data options: colour: Extra inputs are not permitted" in " ".join(proc.stderr.split())


def test_bench_compares_two_folders(trained, tmp_path):
    model = trained / "stages" / "finetune" / "model"
    proc = effkit("bench", str(model), "--baseline", str(model), "--batch-size", "4",
                  "--seq-len", "16", "--warmup", "0", "--trials", "2", "--batches", "1",
                  "--statistic", "best", "--json", str(tmp_path / "b.json"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["ratios"]["baseline"] == 1.0 and "environment" in data
    assert data["settings"]["statistic"] == "best"
    timing = data["timings"]["model"]
    assert timing["samples_per_s"] == max(timing["trial_samples_per_s"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["apply", "nope.yaml"], "does not exist"),
        (
            ["validate", "tests/recipes/tiny.yaml", "--set", "stages.finetune.train.stepz=1"],
            "did you mean 'steps'",
        ),
        (
            ["validate", "tests/recipes/tiny.yaml", "--set", "model.source=preset:huge"],
            "unknown preset 'huge'",
        ),
        (
            ["validate", "tests/recipes/tiny.yaml", "--set", "stages.finetune.train.batch_size=0"],
            "batch_size",
        ),
        (["predict", "missing-model-dir"], "does not exist"),
        (["bench", "missing-model-dir", "--statistic", "fastest"], "'fastest' is not one of"),
        (["bench", "missing-model-dir", "--trials", "many"], "valid integer"),
        (["eval", "missing-model-dir", "--data", "builtin:synthetic"], "does not exist"),
        (["apply", "tests"], "is a folder, not a YAML file"),
        (
            ["eval", "m", "--data", "builtin:synthetic", "--batch-size", "0"],
            "greater than or equal to 1",
        ),
        (["predict", "m", "--batch-size", "0"], "greater than or equal to 1"),
        (["bench", "m", "--batch-size", "0"], "greater than or equal to 1"),
        (["bench", "m", "--seq-len", "0"], "greater than or equal to 2"),
        (["bench", "m", "--trials", "0"], "greater than or equal to 1"),
        (["bench", "m", "--warmup", "-1"], "greater than or equal to 0"),
        (["export", "m", "--seq-len", "1"], "greater than or equal to 2"),
    ],
)
def test_bad_input_exits_2_with_one_message(args, expected):
    proc = effkit(*args, stdin="")
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_longer_than_the_model_can_read_is_refused(trained):
    model = trained / "stages" / "finetune" / "model"
    proc = effkit("bench", str(model), "--seq-len", "100000", "--trials", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "seq_len 100000 is longer than the model can read" in " ".join(proc.stderr.split())


def test_bad_recipe_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nmodel: {source: preset:tiny}\ndata: {source: builtin:synthetic}\n"
        "stages:\n  - name: s\n    transforms: [{name: keep-layer, layers: [0]}]\n"
    )
    proc = effkit("apply", str(bad), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert f"{bad}:6" in proc.stderr and "did you mean 'keep-layers'" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_run_folder_of_another_recipe_exits_2(trained):
    proc = effkit("apply", "recipes/quickstart.yaml", "--run-dir", str(trained))
    assert proc.returncode == 2 and "belongs to recipe 'tiny'" in proc.stderr


def test_debug_shows_the_traceback():
    proc = effkit("--debug", "apply", "nope.yaml")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
