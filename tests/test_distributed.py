"""Two CPU processes run a stage together (torchrun + accelerate's MULTI_CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_a_stage_runs_on_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun ships with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EFFKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "effkit.cli",
         "--quiet", "apply", "tests/recipes/tiny.yaml", "--run-dir", str(tmp_path / "run"),
         "--no-bench", "--set", "stages.finetune.train.steps=6"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "finetune" in manifest["stages"]
    stage = json.loads((tmp_path / "run/stages/finetune/stage.json").read_text())
    assert stage["processes"] == 2
    assert stage["train"]["steps"] == 6
