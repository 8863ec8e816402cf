"""A search whose worker dies mid-trial: the trial is failed and evaluated again in the same run.

Three ways a dead worker is noticed: the driver sees one of its spawned workers end, a worker
finds a trial of its machine whose process is gone, and Optuna's heartbeats (RDB storage) fail
a trial whose worker, on any machine, stopped beating. The searches run on the tiny preset
model and generated data with a few steps a stage, as in test_search.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[1]

from test_search import BASE  # noqa: E402  (the tiny base recipe of the search tests)

# three distinct parameter sets enqueued first: the budget is met without the sampler, so which
# trial runs which recipe does not depend on timing
SPEC = """\
name: tiny-search
recipe: base.yaml
space:
  n:
    choices:
      1: {stages.prime: null, stages.finetune.objective: task}
      2: {}
  sparsity:
    field: stages.prune.transforms.cofi.sparsity
    choices: [0.0, 0.5]
    when: {0.0: {stages.prune: null}}
target: accuracy >= 0.0
trials: 3
start_with:
  - {n: 1, sparsity: 0.0}
  - {n: 2, sparsity: 0.0}
  - {n: 1, sparsity: 0.5}
sampler: {name: random, seed: 0}
benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1, threads: 1}
heartbeat_grace_s: 5
"""


def write_spec(folder: Path, start_with: bool = True) -> Path:
    """The spec; without ``start_with``, a trial a test enqueues is the first one asked for."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(BASE, encoding="utf-8")
    path = folder / "spec.yaml"
    text = (
        SPEC if start_with else SPEC[: SPEC.index("start_with:")] + SPEC[SPEC.index("sampler:") :]
    )
    path.write_text(text, encoding="utf-8")
    return path


def run_search(spec: Path, folder: Path, **kwargs: Any) -> Any:
    from effkit.pareto import search

    return search(spec, search_dir=folder, progress=False, **kwargs)


def load(folder: Path) -> Any:
    import optuna

    from effkit.pareto.storage import make_storage

    record = yaml.safe_load((folder / "search.json").read_text())
    return optuna.load_study(study_name=record["study"], storage=make_storage(record["storage"]))


def distinct_evaluations(study: Any) -> list[str]:
    """Recipe keys of the trials that ran to completion (not reused): none may repeat."""
    return [
        t.user_attrs["recipe_key"]
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs
    ]


def orphan(study: Any, params: dict[str, Any], **attrs: Any) -> Any:
    """A trial left RUNNING, as by a process that died in it."""
    study.enqueue_trial(params)
    trial = study.ask()
    trial.suggest_categorical("n", [1, 2])
    trial.suggest_categorical("sparsity", [0.0, 0.5])
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial


def retry_of(study: Any, number: int) -> Any:
    return next(t for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("retry_of") == number)  # fmt: skip


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_trial_retried_in_the_same_run(tmp_path):
    from effkit.pareto.workers import KILL_TRIAL_ENV

    folder = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "effkit.cli", "search", str(write_spec(tmp_path / "spec")),
         "--search-dir", str(folder), "--workers", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "COLUMNS": "300", KILL_TRIAL_ENV: "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(folder)
    killed = study.trials[0]
    assert killed.state.name == "FAIL" and "killed by SIGKILL" in killed.user_attrs["interrupted"]
    retry = retry_of(study, 0)
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    keys = distinct_evaluations(study)
    assert len(keys) == 3 and len(set(keys)) == 3  # the budget, no recipe run twice
    # the driver said what it did, and the summary says which trial was retried and why
    pid = killed.user_attrs["pid"]
    assert f"(pid {pid}) ended, killed by SIGKILL" in proc.stderr
    assert "starting worker 2 in its place" in proc.stderr
    summary = f"trial 0 was retried as trial {retry.number} (COMPLETE): its worker (pid {pid})"
    assert summary in proc.stdout
    assert summary in (folder / "report.md").read_text()
    assert "killed by SIGKILL" in (folder / "trials.csv").read_text()


@pytest.mark.slow
def test_a_worker_fails_and_retries_a_trial_whose_process_is_gone(tmp_path):
    from effkit.pareto.context import HOST, Context
    from effkit.pareto.spec import load_spec
    from effkit.pareto.workers import run_worker

    spec = load_spec(write_spec(tmp_path / "spec", start_with=False))
    folder = tmp_path / "out"
    created = run_search(spec, folder, trials=0)
    study = load(folder)
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    lost = orphan(study, {"n": 2, "sparsity": 0.5}, host=HOST, pid=gone.pid)
    ctx = Context(spec=spec, overrides=[], folder=folder, study_name=created.study_name,
                  storage=created.storage, trials=1, progress=False)  # fmt: skip
    run_worker(ctx)  # the orphan held the whole budget of one: the worker must free it first
    study = load(folder)
    failed = study.trials[lost.number]
    assert failed.state.name == "FAIL"
    assert failed.user_attrs["interrupted"] == f"its worker (pid {gone.pid}) on {HOST} is gone"
    retry = retry_of(study, lost.number)
    assert retry.state.name == "COMPLETE" and retry.params == {"n": 2, "sparsity": 0.5}
    assert retry.user_attrs["retry_reason"] == failed.user_attrs["interrupted"]
    assert distinct_evaluations(study) == [retry.user_attrs["recipe_key"]]


@pytest.mark.slow
def test_a_trial_whose_heartbeat_stopped_is_retried_with_a_shared_storage(tmp_path):
    spec = write_spec(tmp_path / "spec", start_with=False)
    folder = tmp_path / "out"
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # not the folder's own: heartbeats decide
    run_search(spec, folder, trials=0, storage=shared)
    study = load(folder)
    # a worker on another machine that beat once and then stopped
    lost = orphan(study, {"n": 2, "sparsity": 0.5}, host="elsewhere", pid=1)
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(6.5)  # the spec's heartbeat_grace_s is 5 (timestamps have whole seconds)
    result = run_search(spec, folder, trials=3, storage=shared)
    study = load(folder)
    assert study.trials[lost.number].state.name == "FAIL"
    retry = retry_of(study, lost.number)
    assert retry.state.name == "COMPLETE" and retry.params == {"n": 2, "sparsity": 0.5}
    keys = distinct_evaluations(study)
    assert len(keys) == 3 and len(set(keys)) == 3
    assert result.retries == [
        f"trial {lost.number} was retried as trial {retry.number} (COMPLETE): "
        "its heartbeat stopped (none for over 5 s)"
    ]


def test_the_heartbeat_grace_period_has_a_floor_and_sets_the_beat(tmp_path):
    import optuna

    from effkit.errors import RecipeError
    from effkit.pareto.recovery import use_heartbeat_grace
    from effkit.pareto.spec import load_spec
    from effkit.pareto.storage import make_storage

    path = write_spec(tmp_path)
    assert load_spec(path).heartbeat_grace_s == 5
    path.write_text(SPEC.replace("heartbeat_grace_s: 5", "heartbeat_grace_s: 2"))
    with pytest.raises(RecipeError, match="heartbeat_grace_s"):
        load_spec(path)
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert isinstance(storage, optuna.storages.RDBStorage)
    use_heartbeat_grace(storage, 120)
    assert (storage.grace_period, storage.heartbeat_interval) == (120, 40)
