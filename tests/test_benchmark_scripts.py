"""The scripts in benchmarks/ that run recipes still run (shrunk to a tiny model)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from effkit.recipe import load_recipe

ROOT = Path(__file__).parents[1]


def script(name: str):
    if str(ROOT / "benchmarks") not in sys.path:  # as when run as a script: ``common`` beside it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_mux_ablation_runs_each_variant_and_writes_its_table(tmp_path):
    ablation = script("mux_ablation")
    shrink = ["model.source=preset:tiny", "data.limit=24", "data.max_length=32"]
    for stage in ("prime", "mlm", "finetune"):
        shrink += [f"stages.{stage}.train.steps=2", f"stages.{stage}.train.batch_size=8"]
    argv = [str(ROOT / "recipes" / "mux2.yaml"), "--out", str(tmp_path / "out"),
            "--variants", "prefix", "compute-finetune-only"]  # fmt: skip
    for item in shrink:
        argv += ["--set", item]
    assert ablation.main(argv) == 0
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["prefix", "compute-finetune-only"]
    assert rows[1]["changes"][-1] == "stages.finetune.train.steps=6"  # 2 + 2 + 2 steps
    recipe = (tmp_path / "out" / "compute-finetune-only" / "recipe.yaml").read_text()
    assert "name: mlm" not in recipe
    assert (
        "| prefix | `stages.prime.transforms.multiplex.demux=prefix` |"
        in (tmp_path / "out" / "ablation.md").read_text()
    )


@pytest.mark.parametrize(
    ("recipe", "overrides", "rows"),
    [
        ("mux2.yaml", ["stages.prime.transforms.multiplex.mux=gaussian"],
         ["base", "contextual", "binary", "orthogonal", "prefix", "electra", "compute-no-mlm",
          "compute-finetune-only"]),
        ("mux2.yaml", ["stages.prime.transforms.multiplex.mux=binary",
                       "stages.mlm.objective=electra"],
         ["base", "gaussian", "contextual", "orthogonal", "prefix", "mlm", "compute-no-mlm",
          "compute-finetune-only"]),
        ("mux2_wnut.yaml", [],  # no pre-training stage: no objective or no-MLM rows
         ["base", "gaussian", "contextual", "orthogonal", "prefix", "compute-finetune-only"]),
    ],
)  # fmt: skip
def test_mux_ablation_varies_what_the_recipe_does_not_choose(recipe, overrides, rows):
    ablation = script("mux_ablation")
    table = ablation.variants(load_recipe(ROOT / "recipes" / recipe, overrides=overrides))
    assert list(table) == rows
    assert ("stages.mlm=null" in table["compute-finetune-only"]) == ("compute-no-mlm" in rows)


def test_mux_ablation_gives_a_recipe_without_pretraining_its_mlm_and_electra_rows(tmp_path):
    ablation = script("mux_ablation")
    path = ROOT / "recipes" / "mux2_wnut.yaml"
    text = ablation.with_pretraining(path.read_text(), 100, str(path))
    recipe = ablation.parse_recipe(text)
    assert [s.name for s in recipe.stages] == ["prime", "mlm", "finetune"]
    assert (recipe.stages[1].train.steps, recipe.stages[1].train.batch_size) == (100, 32)
    table = ablation.variants(recipe)
    assert table["electra"] == ["stages.mlm.objective=electra"]
    steps = recipe.stages[2].train.steps + 100  # the MLM stage's steps go to fine-tuning
    assert table["compute-no-mlm"] == ["stages.mlm=null", f"stages.finetune.train.steps={steps}"]
    with pytest.raises(ablation.EffkitError, match="already has an 'mlm' stage"):
        ablation.with_pretraining(text, 100, "twice")
    argv = [str(path), "--out", str(tmp_path), "--pretrain-steps", "0"]
    assert ablation.main(argv) == 2
    assert not (tmp_path / "ablation.md").exists()


def test_mux_ablation_refuses_an_unknown_variant(tmp_path, capsys):
    ablation = script("mux_ablation")
    argv = [str(ROOT / "recipes" / "mux2.yaml"), "--out", str(tmp_path), "--variants", "gausian"]
    assert ablation.main(argv) == 2
    assert "unknown variant(s) ['gausian']" in capsys.readouterr().err
    assert not (tmp_path / "ablation.md").exists()


def test_mux_throughput_refuses_a_mixing_layer_the_model_lacks(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports common.py
    throughput = script("mux_throughput")
    argv = ["--model", "preset:tiny", "--ns", "2", "--mix-after", "2", "--trials", "1"]
    assert throughput.main(argv) == 2  # the tiny encoder has 2 layers
    assert "mix_after=2 leaves no layer to run multiplexed" in capsys.readouterr().err


def test_linear_widths_times_each_shape_and_refuses_a_malformed_one(capsys):
    widths = script("linear_widths")
    assert widths.main(["16->8", "16->7", "--tokens", "32", "--repeats", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["in"], r["out"]) for r in rows] == [(16, 8), (16, 7)]
    assert all(r["ms"] > 0 and r["gflops"] > 0 for r in rows)
    with pytest.raises(SystemExit) as exit_info:
        widths.main(["16x8"])
    assert exit_info.value.code == 2
    assert "expected IN->OUT, got '16x8'" in capsys.readouterr().err


def test_train_speed_times_each_precision_at_each_n(tmp_path, capsys):
    speed = script("train_speed")
    out = tmp_path / "speed.json"
    argv = ["--model", "preset:tiny", "--ns", "1", "2", "--batch-size", "4", "--seq-len", "8",
            "--steps", "1", "--trials", "1", "--precisions", "bf16",
            "--json", str(out)]  # fmt: skip
    assert speed.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    configs = [(r["n"], r["mixed_precision"]) for r in rows]
    assert configs == [(1, "no"), (1, "bf16"), (2, "no"), (2, "bf16")]
    assert all(r["inputs_per_s"] > 0 for r in rows)
    assert [r["ratio"] for r in rows][::2] == [1.0, 1.0]
    assert "| 2 | bf16 |" in capsys.readouterr().out
    assert speed.main(["--model", "preset:tiny", "--ns", "0"]) == 2


def test_train_speed_times_weight_averaging_beside_each_configuration(tmp_path):
    speed = script("train_speed")
    out = tmp_path / "speed.json"
    argv = ["--model", "preset:tiny", "--ns", "1", "--batch-size", "4", "--seq-len", "8",
            "--steps", "1", "--trials", "1", "--precisions", "no", "--ema",
            "--json", str(out)]  # fmt: skip
    assert speed.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["n"], r["mixed_precision"], r["ema"]) for r in rows] == [
        (1, "no", False),
        (1, "no", True),
    ]
    assert rows[0]["ratio"] == 1.0 and rows[1]["inputs_per_s"] > 0


def test_self_check_measures_a_model_against_its_copy(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports common.py
    check = script("self_check")
    out = tmp_path / "self.json"
    argv = ["--model", "preset:tiny", "--batch-size", "4", "--seq-len", "8", "--warmup", "0",
            "--trials", "3", "--batches", "1", "--json", str(out)]  # fmt: skip
    assert check.main(argv) == 0
    record = json.loads(out.read_text())
    found = record["check"]
    assert found["same_architecture"] is True
    assert set(found["ratios"]) == {"reported", "median", "best", "paired"}
    assert all(r > 0 for r in found["ratios"].values())
    assert set(found["spread"]) == {"model", "copy"}
    assert found["within"] == (abs(found["ratios"]["reported"] - 1.0) <= 0.05)
    assert record["bench"]["settings"]["trials"] == 3
    printed = capsys.readouterr().out
    assert "against a deep copy of itself" in printed and "copy / model:" in printed
    assert "same architecture: the ratio is 1.0 by construction" in printed


def test_deploy_speed_compares_stacks_with_every_baseline_runtime(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports common.py
    from effkit import load_model, save
    from effkit.runner import stack
    from effkit_mux import Multiplex

    torch.manual_seed(0)
    save(load_model("preset:tiny", labels=["a", "b"]), tmp_path / "n1")
    save(stack(load_model("preset:tiny", labels=["a", "b"]), [Multiplex(n=2)]), tmp_path / "n2")
    deploy = script("deploy_speed")
    argv = ["--n1", str(tmp_path / "n1"), "--stack", f"n2={tmp_path / 'n2'}",
            "--runtimes", "fp32", "int8", "--batch-size", "4", "--seq-len", "16",
            "--trials", "2", "--batches", "1", "--json", str(tmp_path / "out.json")]  # fmt: skip
    assert deploy.main(argv) == 0
    fixed = json.loads((tmp_path / "out.json").read_text())["fixed_shape"]
    assert {"n1", "n2", "n1@int8"} <= set(fixed["timings"])
    assert fixed["best_runtime"] in ("n1", "n1@int8")
    assert all(t["ratio_best"] > 0 for t in fixed["timings"].values())
    assert "vs best N=1 runtime" in capsys.readouterr().out


@pytest.mark.slow
def test_processes_compares_one_process_with_two(tmp_path):
    processes = script("processes")
    out = tmp_path / "processes.json"
    argv = ["--recipe", "tests/recipes/tiny.yaml", "--set", "stages.finetune.train.steps=4",
            "--output", str(out)]  # fmt: skip
    assert processes.main(argv) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["processes"] for r in runs] == [1, 2]
    assert runs[0]["max_weight_diff"] == 0.0
    assert runs[1]["max_weight_diff"] < 1e-4  # dropout off: the same updates, to rounding
    assert all(r["train_s"] > 0 and "accuracy" in r["test"] for r in runs)


@pytest.mark.slow
def test_ensembling_scores_and_times_each_k(tmp_path, capsys):
    from effkit.recipe import parse_recipe
    from effkit.runner import Runner

    text = (ROOT / "tests" / "recipes" / "tiny.yaml").read_text()
    recipe = parse_recipe(
        text,
        overrides=[
            "stages.finetune.train.steps=4",
            "stages.finetune.transforms=[{name: multiplex, n: 2}]",
        ],
    )
    Runner(recipe, tmp_path / "run", progress=False, benchmark=False).run()
    ensembling = script("ensembling")
    argv = [
        str(tmp_path / "run"),
        "--seeds",
        "0",
        "1",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--trials",
        "1",
        "--batches",
        "1",
        "--warmup",
        "0",
        "--json",
        str(tmp_path / "e.json"),
    ]
    assert ensembling.main(argv) == 0
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["n"] == 2 and set(saved["scores"]) == {"k=1", "k=2"}
    assert "accuracy_std" in saved["scores"]["k=2"]["metrics"]
    assert set(saved["bench"]["timings"]) == {"k=1", "k=2"}
    assert "| k=2 |" in capsys.readouterr().out
