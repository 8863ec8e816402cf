"""One process against several: a recipe's training under ``torchrun``, side by side.

Each configuration runs ``effkit apply RECIPE --no-bench`` in a fresh run folder and stage
cache: one process with all the threads, then ``torchrun --nproc_per_node P`` with the threads
shared out (``OMP_NUM_THREADS``). Dropout is off by default, so that the runs compute the same
updates and the final weights can be compared: the largest absolute difference of any weight
against the one-process run, and the test metrics of each. Wall time is the whole command
(loading, training, evaluation); training time is the stages' own ``seconds``.

    python benchmarks/processes.py                              # the quickstart, 1 and 2 processes
    python benchmarks/processes.py --recipe tests/recipes/tiny.yaml --processes 1 2 --repeat 2
    python benchmarks/processes.py --dropout                    # keep the recipe's dropout

On 2 CPU cores two processes do not train faster than one process with two threads: the same
cores do the same arithmetic and the processes also exchange gradients. Several processes pay
off with one device (GPU) or one machine per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from effkit.bench import environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(processes: int, recipe: str, run: Path, extra: list[str]) -> list[str]:
    apply = ["-m", "effkit.cli", "--quiet", "apply", recipe, "--run-dir", str(run), "--no-bench"]
    if processes == 1:
        return [sys.executable, *apply, *extra]
    torchrun = shutil.which("torchrun", path=str(BIN)) or "torchrun"
    return [torchrun, "--nproc_per_node", str(processes), "--master_port", "29561",
            *apply, *extra]  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    manifest = json.loads((run / "manifest.json").read_text())
    last = list(manifest["stages"])[-1]
    return load_file(run / "stages" / last / "model" / "effkit.safetensors")


def one_run(processes: int, threads: int, recipe: str, folder: Path, extra: list[str]) -> dict:
    run = folder / f"run-{processes}"
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)),
           "EFFKIT_CACHE": str(folder / f"cache-{processes}")}  # fmt: skip
    shutil.rmtree(env["EFFKIT_CACHE"], ignore_errors=True)
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    began, cpu = time.perf_counter(), os.times()
    proc = subprocess.run(command(processes, recipe, run, extra), cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall, after = time.perf_counter() - began, os.times()
    if proc.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads((run / "manifest.json").read_text())
    stages = {name: json.loads((run / "stages" / name / "stage.json").read_text())
              for name in manifest["stages"]}  # fmt: skip
    training = sum(s.get("train", {}).get("seconds", 0.0) for s in stages.values())
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    return {
        "processes": processes,
        "threads_per_process": int(env["OMP_NUM_THREADS"]),
        "wall_s": wall,
        "cpu_s": (after.children_user + after.children_system)
        - (cpu.children_user + cpu.children_system),
        "train_s": training,
        "test": metrics.get("test", {}),
        "run": str(run),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    parser.add_argument("--dropout", action="store_true", help="keep the recipe's dropout")
    parser.add_argument("--set", action="append", default=[], help="an override, as in apply")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if 1 not in args.processes:
        parser.error("--processes must include 1 (the reference)")
    extra = [] if args.dropout else ["--set", "model.dropout=0"]
    for override in args.set:
        extra += ["--set", override]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="effkit-processes-") as tmp:
        folder = Path(tmp)
        for repeat in range(args.repeat):
            reference: dict[str, torch.Tensor] | None = None
            for processes in sorted(args.processes):  # 1 first: the reference
                row = one_run(processes, args.threads, args.recipe, folder, extra)
                got = weights(Path(row.pop("run")))
                reference = got if processes == 1 else reference
                assert reference is not None
                row["max_weight_diff"] = max(
                    float((got[k].float() - reference[k].float()).abs().max()) for k in reference
                )
                row["repeat"] = repeat
                rows.append(row)
                print(f"{processes} process(es) x {row['threads_per_process']} thread(s): "
                      f"wall {row['wall_s']:.1f} s, training {row['train_s']:.1f} s, "
                      f"cpu {row['cpu_s']:.1f} s, max |weight diff| {row['max_weight_diff']:.2e}, "
                      f"test {json.dumps(row['test'])}", flush=True)  # fmt: skip
    result = {"recipe": args.recipe, "dropout": args.dropout, "overrides": args.set,
              "environment": environment(torch.device("cpu")), "runs": rows}  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
