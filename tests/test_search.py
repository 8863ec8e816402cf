"""Pareto search: spec checks, an end-to-end search, resume, recovery, dedupe, workers, outputs.

Searches run on the tiny preset model and generated data with a few steps a stage, so a trial
takes about a second; the space (N in {1, 2}, sparsity in {0, 0.5}) has four parameter sets.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effkit.errors import RecipeError
from effkit.pareto.base import check
from effkit.pareto.spec import load_spec, trial_overrides
from effkit.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).parents[1]

BASE = """\
name: tiny-base
seed: 0
model: {source: preset:tiny}
task: {type: sequence-classification}
data: {source: builtin:synthetic, max_length: 32}
stages:
  - name: prime
    transforms: [{name: multiplex, n: 2}]
    objective: retrieval
    train: {steps: 2, batch_size: 8, checkpoint_every: 0}
  - name: finetune
    objective: mux-task
    train: {steps: 4, batch_size: 8, lr: 3.0e-3, eval_every: 2, checkpoint_every: 0}
  - name: prune
    transforms:
      - {name: cofi, sparsity: 0.5, hidden: false}
      - {name: distill, teacher: finetune}
    train: {steps: 2, batch_size: 8, checkpoint_every: 0}
evaluate: {splits: [validation, test]}
"""

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
sampler: {name: random, seed: 0}
benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1, threads: 1}
"""


def write_spec(folder: Path, spec: str = SPEC, base: str = BASE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(base, encoding="utf-8")
    path = folder / "spec.yaml"
    path.write_text(spec, encoding="utf-8")
    return path


def run_search(spec: Path | object, folder: Path, **kwargs):
    from effkit.pareto import search

    return search(spec, search_dir=folder, progress=False, **kwargs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def evaluated_keys(folder: Path) -> list[str]:
    """Recipe keys of the trials that ran (completed, not reused)."""
    import optuna

    record = yaml.safe_load((folder / "search.json").read_text())
    study = optuna.load_study(study_name=record["study"], storage=_storage(record["storage"]))
    return [
        t.user_attrs["recipe_key"]
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs
    ]


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``folder`` with its inode, mtime and size: a rewrite changes the inode
    (files are replaced atomically), so this does not rely on the file system's mtime resolution."""
    assert folder.is_dir(), folder
    return {
        str(path.relative_to(folder)): (path.stat().st_ino, path.stat().st_mtime_ns,
                                        path.stat().st_size)
        for path in sorted(folder.rglob("*")) if path.is_file()
    }  # fmt: skip


def _storage(url: str):
    from effkit.pareto.storage import make_storage

    return make_storage(url)


# --------------------------------------------------------------------------- removing stages


def test_null_override_removes_a_stage_or_a_transform():
    recipe = parse_recipe(
        BASE, overrides=["stages.prime=null", "stages.prune.transforms.distill=null"]
    )
    assert [s.name for s in recipe.stages] == ["finetune", "prune"]
    assert [t["name"] for t in recipe.stage("prune").transforms] == ["cofi"]  # type: ignore[index]
    bare = BASE.replace("[{name: multiplex, n: 2}]", "[multiplex]")
    recipe = parse_recipe(bare, overrides=["stages.prime.transforms.multiplex=null"])
    assert recipe.stage("prime").transforms == []
    with pytest.raises(RecipeError, match=r"no item named 'prme'.*did you mean 'prime'"):
        parse_recipe(BASE, overrides=["stages.prme=null"])


# --------------------------------------------------------------------------- locks


def test_a_measurement_waits_for_work_and_new_work_waits_for_it(tmp_path):
    import fcntl
    import threading
    import time

    from effkit.pareto.locks import SearchLocks

    events: list[str] = []
    working = threading.Event()

    def work(name: str, hold: float, started: threading.Event | None = None) -> None:
        with SearchLocks(tmp_path).work():
            if started is not None:
                started.set()
            events.append(f"{name} in")
            time.sleep(hold)
            events.append(f"{name} out")

    def measure() -> None:
        with SearchLocks(tmp_path).measuring():
            events.append("measure in")
            time.sleep(0.3)
            events.append("measure out")

    def gate_closed() -> bool:
        """Whether a measurement holds the gate (so that new work queues behind it)."""
        with open(tmp_path / "locks" / "gate.lock", "ab") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False

    first = threading.Thread(target=work, args=("first", 0.6, working))
    first.start()
    working.wait()
    meter = threading.Thread(target=measure)
    meter.start()
    deadline = time.monotonic() + 60
    # however slow the machine: start later work only once the measurement holds the gate
    # (or, if it was slower still, has measured already); either way it must come after
    while not gate_closed() and "measure in" not in events:
        assert time.monotonic() < deadline, "the measurement never took the gate"
        time.sleep(0.01)
    second = threading.Thread(target=work, args=("second", 0.0))
    second.start()
    for thread in (first, meter, second):
        thread.join(timeout=60)
    assert events == ["first in", "first out", "measure in", "measure out", "second in",
                      "second out"]  # fmt: skip


def test_a_second_search_in_the_same_folder_is_refused(tmp_path):
    from effkit.errors import RunError
    from effkit.pareto.locks import SearchLocks

    with (
        SearchLocks(tmp_path).owner(),
        pytest.raises(RunError, match="another search is running"),
        SearchLocks(tmp_path).owner(),
    ):
        pass


# --------------------------------------------------------------------------- spec checks


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("trials: 3", "trails: 3", r"spec.yaml:13: trails: unknown field .*did you mean 'trials'"),
        ("seed: 0}", "seed: 0, nme: x}", r"spec.yaml:14: sampler.nme: unknown field"),
        (
            "2: {}",
            "2: {stages.finetun.train.steps: 3}",
            r"spec.yaml:\d+: space.n: the value 2 gives an invalid recipe: --set "
            r"stages.finetun.*did you mean 'finetune'",
        ),
        (
            "cofi.sparsity",
            "cofi.sparsty",
            r"spec.yaml:10: space.sparsity: .*sparsty.*did you mean 'sparsity'",
        ),
        ("choices: [0.0, 0.5]", "choices: [0.0, 1.5]", r"space.sparsity: the value 1.5 .*less"),
        ("when: {0.0:", "when: {0.3:", r"spec.yaml:8: space.sparsity: 'when' names 0.3"),
        ("accuracy >= 0.0", "acuracy >= 0.0", r"reports no metric 'acuracy' .*'accuracy'"),
        ("accuracy >= 0.0", "accuracy > 0.0", r"not 'METRIC >= VALUE'"),
        ("recipe: base.yaml", "recipe: bse.yaml", r"spec.yaml:2: base recipe .*bse.yaml"),
        ("trials: 3", "trials: 3\nstart_with: [{n: 3, sparsity: 0.0}]", r"'n' never takes 3"),
        ("trials: 3", "trials: 3\nstart_with: [{n: 1}]", r"missing: sparsity"),
    ],
)
def test_spec_errors_say_where_and_what_instead(tmp_path, old, new, expected):
    assert old in SPEC
    path = write_spec(tmp_path, SPEC.replace(old, new, 1))
    with pytest.raises(RecipeError, match=expected):
        check(load_spec(path))


def test_a_combination_that_breaks_the_recipe_is_found_before_running(tmp_path):
    # N=1 keeps the prune stage's distillation from 'finetune'; removing finetune breaks nothing
    # in validation, but a bundle that writes to a stage another choice removes is fine too:
    spec = SPEC.replace("2: {}", "2: {stages.prime.train.steps: 3}")
    base = check(load_spec(write_spec(tmp_path, spec)))
    recipe = base.trial_recipe(load_spec(tmp_path / "spec.yaml"), {"n": 1, "sparsity": 0.5})
    assert [s.name for s in recipe.stages] == ["finetune", "prune"]
    assert recipe.evaluate.splits == ["validation"]


def test_overrides_write_first_and_remove_last(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    items = trial_overrides(spec, {"n": 1, "sparsity": 0.0})
    assert items == ['stages.finetune.objective="task"', "stages.prime=null", "stages.prune=null"]
    assert trial_overrides(spec, {"n": 2, "sparsity": 0.5}) == [
        "stages.prune.transforms.cofi.sparsity=0.5"
    ]


def test_cli_spec_error_exits_2_and_writes_nothing(tmp_path):
    path = write_spec(tmp_path, SPEC.replace("trials: 3", "trails: 3"))
    folder = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "effkit.cli", "search", str(path), "--search-dir", str(folder)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "spec.yaml:13: trails: unknown field" in proc.stderr
    assert not folder.exists()


def test_a_storage_that_cannot_be_opened_exits_2_and_claims_nothing(tmp_path):
    from effkit.pareto.storage import shown

    path = write_spec(tmp_path)
    folder = tmp_path / "out"
    bad = f"sqlite:///{tmp_path}/no-such-dir/study.db"
    proc = subprocess.run(
        [sys.executable, "-m", "effkit.cli", "search", str(path), "--search-dir", str(folder),
         "--storage", bad, "--trials", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "cannot open the study storage" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing recorded: the same folder takes the right storage
    assert not (folder / "search.json").exists()
    assert shown("postgresql://user:secret@db/effkit") == "postgresql://user:***@db/effkit"


def test_an_unreadable_search_record_is_a_clear_error(tmp_path):
    from effkit.errors import RunError

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "search.json").write_text('{"name": "tiny-search", "stu', encoding="utf-8")
    with pytest.raises(RunError, match=r"cannot read '.*search.json'"):
        run_search(write_spec(tmp_path / "spec"), folder, trials=0)
    (folder / "search.json").write_text("[]", encoding="utf-8")
    with pytest.raises(RunError, match="not a search record"):
        run_search(write_spec(tmp_path / "spec"), folder, trials=0)


def test_pareto_png_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib.figure
    import matplotlib.pyplot as plt

    from effkit.pareto import outputs

    spec = load_spec(write_spec(tmp_path / "spec"))
    rows = [{"number": i, "state": "COMPLETE", "duplicate_of": None, "metric": m, "ratio": r,
             "meets_target": True, "label": f"trial {i}"}
            for i, (m, r) in enumerate([(0.5, 1.0), (0.4, 1.5)])]  # fmt: skip
    path = tmp_path / "out" / "pareto.png"
    path.parent.mkdir()
    assert outputs.plot(path, rows, rows, rows[1], spec, "accuracy")
    whole = path.read_bytes()
    assert whole[:8] == b"\x89PNG\r\n\x1a\n"

    def broken(self, fname, **kwargs):
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG half")
        else:
            Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    figures = len(plt.get_fignums())
    with pytest.raises(OSError, match="No space"):
        outputs.plot(path, rows, rows, rows[1], spec, "accuracy")
    assert path.read_bytes() == whole  # the last whole figure stays
    assert [p.name for p in path.parent.iterdir()] == ["pareto.png"]
    assert len(plt.get_fignums()) == figures


def test_shipped_pareto_spec_validates():
    spec = load_spec(ROOT / "recipes" / "pareto_search.yaml")
    base = check(spec)
    assert set(spec.space) == {"n", "size", "sparsity", "precision"}
    assert base.recipe.model.source == "builtin:minilm-l6"
    assert base.recipe.data is not None and base.recipe.data.source == "builtin:bbc-news"
    n1 = base.trial_recipe(spec, {"n": 1, "size": "L6", "sparsity": 0.0, "precision": "fp32"})
    assert [s.name for s in n1.stages] == ["finetune"]
    assert all(t["name"] != "multiplex" for s in n1.stages for t in s.transforms)  # type: ignore[index]
    student = base.trial_recipe(spec, {"n": 5, "size": "L2", "sparsity": 0.8, "precision": "int8"})
    assert [s.name for s in student.stages] == ["prime", "finetune", "shrink", "prune", "quantize"]
    half = base.trial_recipe(spec, {"n": 2, "size": "L6", "sparsity": 0.6, "precision": "bf16"})
    assert half.stages[-1].transforms == [{"name": "precision", "dtype": "bf16"}]
    assert [t.registered_name() for t in half.stages[-1].build_transforms()] == ["precision"]


def test_the_precision_dimension_takes_every_number_format(tmp_path):
    text = (ROOT / "recipes" / "pareto_search.yaml").read_text()
    text = text.replace(
        "recipe: pareto_base.yaml", f"recipe: {ROOT / 'recipes' / 'pareto_base.yaml'}"
    )
    fp16 = "fp16: {stages.quantize.transforms: [{name: precision, dtype: fp16}]}"
    text = text.replace("      int8: {}", f"      int8: {{}}\n      {fp16}")
    (tmp_path / "spec.yaml").write_text(text)
    spec = load_spec(tmp_path / "spec.yaml")
    base = check(spec)
    formats = {}
    for choice in ("fp32", "bf16", "fp16", "int8"):
        recipe = base.trial_recipe(
            spec, {"n": 1, "size": "L6", "sparsity": 0.0, "precision": choice}
        )
        last = recipe.stages[-1]
        formats[choice] = [t.registered_name() for t in last.build_transforms()]
    assert formats == {
        "fp32": [],
        "bf16": ["precision"],
        "fp16": ["precision"],
        "int8": ["quantize"],
    }


# --------------------------------------------------------------------------- a whole search


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search of three trials, made once for the tests that read its outputs."""
    root = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EFFKIT_CACHE", str(root / "cache"))
        result = run_search(write_spec(root / "spec"), root / "out")
    return result, root


@pytest.mark.slow
def test_search_writes_every_output(searched):
    result, _ = searched
    folder = result.search_dir
    for name in ("trials.csv", "pareto.csv", "pareto.png", "report.md", "best_recipe.yaml",
                 "study.db", "spec.yaml", "base_recipe.yaml"):  # fmt: skip
        assert (folder / name).is_file(), name
    rows = read_csv(folder / "trials.csv")
    assert len([r for r in rows if r["state"] == "COMPLETE" and not r["duplicate_of"]]) == 3
    assert {"params_n", "params_sparsity", "accuracy", "throughput_ratio"} <= set(rows[0])
    # what CoFi reached is reported beside what was asked for; unpruned trials have none
    for r in rows:
        pruned = float(r["params_sparsity"]) > 0 and r["state"] == "COMPLETE"
        assert bool(r["sparsity_reached"]) == pruned, r
        if pruned:
            assert 0.0 <= float(r["sparsity_reached"]) <= 1.0
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    # trials share stages through the cache: some trial took its first stages from it
    assert any(r["reused_stages"] for r in rows) or len({r["params_n"] for r in rows}) == 3
    report = (folder / "report.md").read_text()
    assert "## Pareto front" in report and "best_recipe.yaml" in report
    assert result.best is not None and "accuracy" in result.best["test"]


@pytest.mark.slow
def test_front_is_non_dominated_and_best_meets_the_target(searched):
    result, _ = searched
    front = result.front
    assert front
    for a in front:
        for b in front:
            assert not (b["ratio"] >= a["ratio"] and b["metric"] > a["metric"]
                        and b["ratio"] > a["ratio"])  # fmt: skip
    assert result.best["meets_target"] is True
    assert result.best["ratio"] == max(r["ratio"] for r in front if r["meets_target"])


@pytest.mark.slow
def test_best_recipe_reapplied_gives_the_same_validation_accuracy(searched, tmp_path, monkeypatch):
    from effkit.runner import run

    result, root = searched
    monkeypatch.setenv("EFFKIT_CACHE", str(root / "cache"))
    recipe = load_recipe(result.best_recipe)
    assert recipe.benchmark.threads == 1 and recipe.benchmark.baseline == "initial"
    again = run(recipe, tmp_path / "again", progress=False)
    assert again.metrics["validation"]["accuracy"] == result.best["metric"]
    assert again.metrics["test"] == result.best["test"]
    assert again.bench is not None and again.bench["ratios"]["final"] > 0


@pytest.mark.slow
def test_resume_runs_only_the_missing_trials(tmp_path):
    tpe = SPEC.replace("{name: random, seed: 0}", "{name: tpe, seed: 0, startup_trials: 2}")
    spec = write_spec(tmp_path / "spec", tpe)
    folder = tmp_path / "out"
    first = run_search(spec, folder, trials=2)
    assert len(evaluated_keys(folder)) == 2
    kept = {r["run_dir"]: snapshot(folder / r["run_dir"])
            for r in first.trials if r["state"] == "COMPLETE"}  # fmt: skip
    assert len(kept) == 2
    second = run_search(spec, folder, trials=4)
    keys = evaluated_keys(folder)
    assert len(keys) == 4 and len(set(keys)) == 4  # every parameter set once, none twice
    # completed trials' folders are untouched, whichever trial turns out best this time
    assert {run_dir: snapshot(folder / run_dir) for run_dir in kept} == kept
    # a finished search run again only rewrites its outputs
    third = run_search(spec, folder, trials=4)
    assert len(third.trials) == len(second.trials)
    assert {run_dir: snapshot(folder / run_dir) for run_dir in kept} == kept


@pytest.mark.slow
def test_the_best_trial_is_scored_on_test_outside_its_run_folder(tmp_path, monkeypatch):
    spec = SPEC.replace("trials: 3", "trials: 1\nstart_with: [{n: 2, sparsity: 0.5}]")
    spec_path = write_spec(tmp_path / "spec", spec)
    folder = tmp_path / "out"
    first = run_search(spec_path, folder)
    assert first.best is not None and first.best["number"] == 0
    trial_dir = folder / "trials" / "0000"
    # the trial's folder holds the trial as it ran: scored on validation only
    assert load_recipe(trial_dir / "recipe.yaml").evaluate.splits == ["validation"]
    assert "test" not in json.loads((trial_dir / "metrics.json").read_text())["metrics"]
    kept = snapshot(trial_dir)
    # without best/ and without the stage cache, best/ starts from the trial's own stages
    shutil.rmtree(folder / "best")
    monkeypatch.setenv("EFFKIT_CACHE", str(tmp_path / "empty-cache"))
    again = run_search(spec_path, folder)
    assert snapshot(trial_dir) == kept
    assert again.best is not None and again.best["test"] == first.best["test"]
    for stage in ("prime", "finetune", "prune"):  # hard links: nothing was trained again
        assert os.path.samefile(folder / "best" / "stages" / stage / "stage.json",
                                trial_dir / "stages" / stage / "stage.json")  # fmt: skip


@pytest.mark.slow
def test_a_recipe_that_failed_with_an_error_is_not_run_again(tmp_path, monkeypatch):
    from effkit.pareto import evaluation

    ran: list[str] = []

    def fail(self):
        ran.append(evaluation.recipe_key(self.recipe))
        raise RuntimeError("out of memory")

    monkeypatch.setattr(evaluation.Runner, "run", fail)
    # with sparsity 0 the prune stage is gone, so both start_with entries are one recipe
    spec = SPEC.replace(
        "target:",
        "  lr:\n    field: stages.prune.train.lr\n    choices: [0.001, 0.002]\ntarget:",
    ).replace("trials: 3", "trials: 2\nstart_with: [{n: 2, sparsity: 0.0, lr: 0.001}, "
              "{n: 2, sparsity: 0.0, lr: 0.002}]")  # fmt: skip
    result = run_search(write_spec(tmp_path / "spec", spec), tmp_path / "out")
    rows = {r["number"]: r for r in result.trials}
    assert rows[0]["state"] == "FAIL" and "out of memory" in rows[0]["note"]
    assert rows[1]["state"] == "FAIL" and rows[1]["duplicate_of"] == 0
    assert "trial 0" in rows[1]["note"]
    # two distinct recipes were evaluated (failed ones count), none of them twice
    assert len(ran) == 2 and len(set(ran)) == 2
    assert result.best is None


@pytest.mark.slow
def test_a_trial_left_running_is_failed_and_evaluated_again(tmp_path):
    import optuna

    spec = write_spec(tmp_path / "spec")
    folder = tmp_path / "out"
    run_search(spec, folder, trials=1)
    record = yaml.safe_load((folder / "search.json").read_text())
    study = optuna.load_study(study_name=record["study"], storage=_storage(record["storage"]))
    # a process that died mid-trial: RUNNING forever, with a half-made run folder
    study.enqueue_trial({"n": 2, "sparsity": 0.5})
    orphan = study.ask()
    orphan.suggest_categorical("n", [1, 2])
    orphan.suggest_categorical("sparsity", [0.0, 0.5])
    orphan.set_user_attr("host", "elsewhere")
    orphan_dir = folder / "trials" / f"{orphan.number:04d}"
    orphan_dir.mkdir(parents=True)
    (orphan_dir / "manifest.json").write_text('{"recipe": "tiny-base", "stages": {}}')
    (orphan_dir / "marker").write_text("half-made")

    result = run_search(spec, folder, trials=3)
    rows = {r["number"]: r for r in result.trials}
    assert rows[orphan.number]["state"] == "FAIL"
    assert "ended" in rows[orphan.number]["note"]
    retry = next(r for r in result.trials if r["retry_of"] == orphan.number)
    assert retry["state"] == "COMPLETE" and retry["params"] == {"n": 2, "sparsity": 0.5}
    # the retry took over the interrupted trial's folder (to continue from its checkpoints)
    assert (folder / retry["run_dir"] / "marker").is_file()
    assert len(evaluated_keys(folder)) == 3


@pytest.mark.slow
def test_a_repeated_recipe_reuses_values_instead_of_running(tmp_path):
    # with sparsity 0 the prune stage is gone, so its learning rate changes nothing
    spec = SPEC.replace(
        "target:",
        "  lr:\n    field: stages.prune.train.lr\n    choices: [0.001, 0.002]\ntarget:",
    ).replace("trials: 3", "trials: 1\nstart_with: [{n: 2, sparsity: 0.0, lr: 0.001}, "
              "{n: 2, sparsity: 0.0, lr: 0.002}]")  # fmt: skip
    folder = tmp_path / "out"
    result = run_search(write_spec(tmp_path / "spec", spec), folder, trials=2)
    rows = {r["number"]: r for r in result.trials}
    assert rows[1]["duplicate_of"] == 0
    assert (rows[1]["metric"], rows[1]["ratio"]) == (rows[0]["metric"], rows[0]["ratio"])
    assert not (folder / "trials" / "0001").exists()
    keys = evaluated_keys(folder)
    assert len(keys) == 2 and len(set(keys)) == 2


@pytest.mark.slow
def test_two_workers_share_a_journal_file(tmp_path):
    folder = tmp_path / "out"
    result = run_search(write_spec(tmp_path / "spec"), folder, trials=3, workers=2)
    assert (folder / "journal.log").is_file() and not (folder / "study.db").exists()
    assert result.storage.startswith("journal:")
    keys = evaluated_keys(folder)
    assert len(keys) in (3, 4) and len(set(keys)) == len(keys)  # W-1 may overshoot, none twice
    hosts = {r["number"] for r in result.trials if r["state"] == "COMPLETE"}
    assert hosts
    assert not [r for r in result.trials if r["state"] == "RUNNING"]


@pytest.mark.slow
def test_baseline_measured_beside_each_trial_with_nsga2(tmp_path):
    spec = SPEC.replace("{name: random, seed: 0}", "{name: nsga2, seed: 1, population_size: 2}")
    spec = spec.replace("target:", "objectives: {metric: f1_macro, baseline: each-trial}\ntarget:")
    folder = tmp_path / "out"
    result = run_search(write_spec(tmp_path / "spec", spec), folder, trials=2)
    done = [r for r in result.trials if r["state"] == "COMPLETE"]
    assert len(done) >= 2 and all(r["baseline_samples_per_s"] for r in done)
    assert not list(folder.glob("baseline-*.json"))
    assert "f1_macro" in read_csv(folder / "trials.csv")[0]


@pytest.mark.slow
def test_folder_of_another_study_is_refused(tmp_path):
    from effkit.errors import RunError

    spec = write_spec(tmp_path / "spec")
    folder = tmp_path / "out"
    run_search(spec, folder, trials=0)
    with pytest.raises(RunError, match="holds study 'tiny-search'"):
        run_search(spec, folder, trials=0, study="other")
    changed = write_spec(
        tmp_path / "spec2", SPEC.replace("choices: [0.0, 0.5]", "choices: [0.0, 0.25]")
    )
    with pytest.raises(RunError, match="different spec"):
        run_search(changed, folder, trials=0)


# --------------------------------------------------------------------------- the shipped spec


@pytest.fixture
def six_layer_model(tmp_path) -> Path:
    """A tiny 6-layer BERT folder, so that the shipped space's students (4 and 2 layers) exist."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from effkit.models import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=6, num_attention_heads=4)  # fmt: skip
    folder = tmp_path / "six-layers"
    BertModel(config).save_pretrained(folder)  # no head: the task's head is made for it
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_shipped_pareto_spec_runs_shrunk(tmp_path, six_layer_model):
    from effkit.bench import BenchConfig
    from effkit.pareto.spec import Target

    spec = load_spec(ROOT / "recipes" / "pareto_search.yaml")
    spec = spec.model_copy(update={
        "trials": 2,
        "target": Target(min=0.0),  # the tiny model is not meant to reach 0.90
        "start_with": [{"n": 5, "size": "L2", "sparsity": 0.4, "precision": "int8"},
                       {"n": 1, "size": "L4", "sparsity": 0.8, "precision": "fp32"}],
        "benchmark": BenchConfig(batch_size=4, seq_len=16, warmup=0, trials=1, batches=1,
                                 threads=1),
    })  # fmt: skip
    overrides = [f"model.source={six_layer_model}", "data.source=builtin:synthetic",
                 "data.max_length=32"]  # fmt: skip
    for stage in ("prime", "finetune", "shrink", "prune"):
        overrides += [f"stages.{stage}.train.steps=2", f"stages.{stage}.train.batch_size=8"]
    for stage in ("finetune", "shrink", "prune"):
        overrides.append(f"stages.{stage}.train.eval_every=1")
    result = run_search(spec, tmp_path / "out", overrides=overrides)
    done = [r for r in result.trials if r["state"] == "COMPLETE"]
    assert len(done) == 2, [r["note"] for r in result.trials]
    assert {r["label"] for r in done} == {
        "n=5, size=L2, sparsity=0.4, precision=int8",
        "n=1, size=L4, sparsity=0.8, precision=fp32",
    }
    best = load_recipe(result.search_dir / "best_recipe.yaml")
    assert best.stages and best.evaluate.splits == ["validation", "test"]
