"""Several processes: two CPU processes run a stage together (torchrun, and accelerate launch
as users type it) and end where one process ends; launches that start fewer processes than
asked are named; only the first process talks; DDP is told about unused parameters."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effkit.distributed import StageLoss, launch_problem, mean_over_processes, unused_parameters
from effkit.models import load_model
from effkit.objectives import TaskObjective
from effkit.train import accelerator_for
from effkit.transform import StageContext

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
DETERMINISTIC = [
    "--set", "model.dropout=0", "--set", "stages.finetune.train.steps=8",
    "--set", "stages.finetune.train.grad_accum=2",
    "--set", "stages.finetune.train.checkpoint_every=4",
]  # fmt: skip
"""tiny.yaml without dropout, 8 steps of 2 micro-batches, a checkpoint in the middle."""


def _effkit(launcher: list[str], tmp_path: Path, name: str, *extra: str, quiet: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EFFKIT_CACHE": str(tmp_path / f"cache-{name}")}
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    command = [*launcher, "-m", "effkit.cli", *(["--quiet"] if quiet else []), "apply",
               "tests/recipes/tiny.yaml", "--run-dir", str(tmp_path / name), "--no-bench",
               *extra]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _stage(run: Path) -> dict:
    return json.loads((run / "stages/finetune/stage.json").read_text())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "stages/finetune/model/effkit.safetensors")


@pytest.mark.slow
def test_a_stage_runs_on_two_cpu_processes_and_only_the_first_talks(tmp_path):
    torchrun = shutil.which("torchrun", path=str(BIN))
    assert torchrun, "torchrun ships with torch"
    proc = _effkit([torchrun, "--nproc_per_node", "2", "--master_port", "29533"], tmp_path, "run",
                   "--set", "stages.finetune.train.steps=6", quiet=False)  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "finetune" in manifest["stages"]
    stage = _stage(tmp_path / "run")
    assert stage["processes"] == 2
    assert stage["train"]["steps"] == 6
    assert proc.stdout.count("report:") == 1
    assert proc.stderr.count("stage 'finetune': 6 steps") == 1


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes_ends_where_one_process_ends(tmp_path):
    one = _effkit([sys.executable], tmp_path, "one", *DETERMINISTIC)
    two = _effkit([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                   "--main_process_port", "29534"], tmp_path, "two", *DETERMINISTIC)  # fmt: skip
    assert _stage(tmp_path / "one")["processes"] == 1
    assert _stage(tmp_path / "two")["processes"] == 2
    first, second = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert first.keys() == second.keys()
    for name, tensor in first.items():  # the same global batch: only rounding differs
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=1e-4, msg=name)
    # the logged loss is the mean over both processes' halves, as one process logs the whole
    losses = [[row["loss"] for row in _stage(tmp_path / run)["train"]["history"]]
              for run in ("one", "two")]  # fmt: skip
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert two.stdout.count("report:") == one.stdout.count("report:") == 1
    assert "only 1 process" not in two.stderr and "docs/distributed.md" not in two.stderr


@pytest.mark.slow
def test_accelerate_launch_that_starts_one_of_two_processes_says_so_once(tmp_path):
    proc = _effkit([str(BIN / "accelerate"), "launch", "--num_processes", "2"], tmp_path, "run",
                   "--set", "stages.finetune.train.steps=2")  # fmt: skip
    assert _stage(tmp_path / "run")["processes"] == 1
    assert proc.stderr.count("only 1 process started") == 1
    assert "accelerate launch --multi_gpu" in proc.stderr


def test_the_launch_check_reads_what_launchers_set():
    accelerate_plain = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}  # fmt: skip
    assert "only 1 process started" in (launch_problem(1, accelerate_plain) or "")
    assert launch_problem(1, {"ACCELERATE_MIXED_PRECISION": "no"}) is None  # one was asked
    assert launch_problem(1, {}) is None
    assert launch_problem(2, {"WORLD_SIZE": "2", **accelerate_plain}) is None  # torchrun
    assert "WORLD_SIZE=4 but 2" in (launch_problem(2, {"WORLD_SIZE": "4"}) or "")
    assert "PMI_SIZE=2 but 1" in (launch_problem(1, {"PMI_SIZE": "2"}) or "")


def test_one_process_logs_its_own_means():
    accelerator = accelerator_for("no")
    assert mean_over_processes({"loss": [1.0, 2.0], "x": [3.0]}, accelerator) == {
        "loss": 1.5, "x": 3.0}  # fmt: skip


def test_parameters_the_loss_does_not_reach_are_found_without_moving_the_random_state():
    torch.manual_seed(0)
    model = load_model("preset:tiny", num_labels=3).train()
    model.spare = torch.nn.Linear(4, 4)  # trainable, never used
    model.hf.classifier.weight.requires_grad_(False)  # frozen: not DDP's concern
    ctx = StageContext(stage="test", tokenizer=None)
    batch = {"input_ids": torch.randint(1000, 2000, (4, 8)),
             "attention_mask": torch.ones(4, 8, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 0])}  # fmt: skip
    torch.manual_seed(5)
    random.seed(5)
    unused = unused_parameters(StageLoss(model, TaskObjective(), [], ctx), batch)
    assert unused == ["model.spare.weight", "model.spare.bias"]
    after = (torch.rand(3), random.random())
    torch.manual_seed(5)
    random.seed(5)
    assert torch.equal(after[0], torch.rand(3)) and after[1] == random.random()
