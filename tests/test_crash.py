"""Crash safety: kills between writes, damaged checkpoints and models, one run per folder."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import pytest
import torch

import effkit.runner as runner_module
from effkit.errors import RunError
from effkit.models import load
from effkit.recipe import parse_recipe
from effkit.run_folder import hold
from effkit.runner import Runner

TWO_STAGES = textwrap.dedent(
    """\
    name: crash
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 32, limit: 64}
    stages:
      - name: first
        train: {steps: 12, batch_size: 8, lr: 2.0e-3, checkpoint_every: 4, eval_every: 0}
      - name: second
        transforms: [{name: keep-layers, layers: [0]}]
        train: {steps: 8, batch_size: 8, lr: 2.0e-3, checkpoint_every: 4, eval_every: 0}
    evaluate: {splits: [test]}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1}
    """
)

POINTS = ["stage.json", "model", "manifest", "cache", "checkpoints removed", "metrics.json",
          "bench.json", "report"]  # fmt: skip
"""Every write the runner makes durable a stage or a run with, in order."""


class Killed(BaseException):
    """Stands for the process being killed: nothing after the kill point runs."""


def recipe():
    return parse_recipe(TWO_STAGES, source="crash.yaml")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load(folder / "stages" / "second" / "model").state_dict()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    folder = tmp_path_factory.mktemp("reference") / "run"
    Runner(recipe(), folder, progress=False, cache=False).run()
    return weights(folder)


def trained(monkeypatch) -> list[str]:
    """The stages the runner trains from now on (fit calls), in order."""
    calls: list[str] = []
    real = runner_module.fit

    def counting(*args, **kwargs):
        calls.append(kwargs["stage"])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "fit", counting)
    return calls


def killed_at(point: str, folder: Path, cache: bool, nth: int = 1) -> None:
    """Run into ``folder`` and stop the run at the ``nth`` time it reaches ``point``."""
    seen = []

    def kill(reached: str) -> None:
        seen.append(reached)
        if seen.count(point) == nth:
            raise Killed(point)

    runner = Runner(recipe(), folder, progress=False, cache=cache)
    runner.on_write = kill
    with pytest.raises(Killed):
        runner.run()


CASES = [(point, False) for point in POINTS if point != "cache"] + [
    (point, True) for point in ("stage.json", "cache", "checkpoints removed")
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "cache"), CASES,
                         ids=[f"{p}-{'cache' if c else 'no-cache'}" for p, c in CASES])  # fmt: skip
def test_a_kill_between_any_two_writes_loses_nothing(tmp_path, monkeypatch, reference, point,
                                                     cache):  # fmt: skip
    folder = tmp_path / "run"
    killed_at(point, folder, cache)
    calls = trained(monkeypatch)
    result = Runner(recipe(), folder, progress=False, cache=cache).run()
    if point == "stage.json":  # the model had not landed: the stage resumes from its checkpoint
        assert calls == ["first", "second"]
        assert result.stages["first"]["train"]["resumed_from"] == 8
    elif point in ("model", "manifest", "cache", "checkpoints removed"):
        assert calls == ["second"]  # the first stage finished: it is never trained again
    else:
        assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(weights(folder).values(), reference.values(),
                                                  strict=True))  # fmt: skip
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"first", "second"}
    assert (folder / "report.md").is_file() and (folder / "metrics.json").is_file()
    assert not list(folder.rglob("*.tmp"))
    assert not (folder / "stages" / "first" / "checkpoints").exists()


def test_a_kill_in_the_second_stage_keeps_the_first(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    killed_at("stage.json", folder, cache=False, nth=2)
    calls = trained(monkeypatch)
    Runner(recipe(), folder, progress=False, cache=False).run()
    assert calls == ["second"]


def stopped_with_checkpoints(folder: Path) -> Path:
    """A run stopped after the first stage trained, before its model landed: checkpoints of
    steps 8 (last) and 4 (previous) remain."""
    killed_at("stage.json", folder, cache=False)
    checkpoints = folder / "stages" / "first" / "checkpoints"
    steps = {p.name: json.loads((p / "progress.json").read_text())["step"]
             for p in checkpoints.iterdir()}  # fmt: skip
    assert steps == {"last": 8, "previous": 4}
    return checkpoints


def cut(file: Path) -> None:
    """Replace ``file`` by its first half (a new file: the cache may hard-link the old one)."""
    half = file.read_bytes()[: file.stat().st_size // 2]
    file.unlink()
    file.write_bytes(half)


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt", "progress.json"])
def test_a_damaged_checkpoint_is_one_message_with_a_choice(tmp_path, reference, name):
    folder = tmp_path / "run"
    checkpoints = stopped_with_checkpoints(folder)
    cut(checkpoints / "last" / name)
    with pytest.raises(RunError, match=f"checkpoint '.*last' is damaged: .*{name.split('.')[0]}"
                       ) as caught:  # fmt: skip
        Runner(recipe(), folder, progress=False, cache=False).run()
    hint = caught.value.hint or ""
    assert "resume from the intact checkpoint of step 4" in hint and "restart the stage" in hint
    (checkpoints / "last" / "progress.json").unlink()  # as the message says: delete 'last'
    for part in (checkpoints / "last").iterdir():
        part.unlink()
    (checkpoints / "last").rmdir()
    result = Runner(recipe(), folder, progress=False, cache=False).run()
    assert result.stages["first"]["train"]["resumed_from"] == 4
    assert all(torch.equal(a, b) for a, b in zip(weights(folder).values(), reference.values(),
                                                  strict=True))  # fmt: skip


def test_with_both_checkpoints_damaged_the_choice_is_a_restart(tmp_path):
    folder = tmp_path / "run"
    checkpoints = stopped_with_checkpoints(folder)
    cut(checkpoints / "last" / "model.safetensors")
    (checkpoints / "previous" / "progress.json").write_text("{")
    with pytest.raises(RunError, match="damaged") as caught:
        Runner(recipe(), folder, progress=False, cache=False).run()
    assert "restart the stage" in (caught.value.hint or "")
    assert "intact" not in (caught.value.hint or "")


def test_a_kill_while_the_last_checkpoint_is_replaced_resumes_from_the_one_before(tmp_path):
    folder = tmp_path / "run"
    checkpoints = stopped_with_checkpoints(folder)
    import shutil

    shutil.rmtree(checkpoints / "last")  # between moving 'last' aside and renaming the new one
    result = Runner(recipe(), folder, progress=False, cache=False).run()
    assert result.stages["first"]["train"]["resumed_from"] == 4


def test_a_finished_stage_with_damaged_weights_is_named_or_taken_from_the_cache(tmp_path, caplog):
    folder = tmp_path / "run"
    Runner(recipe(), folder, progress=False, cache=True).run()
    weights_file = folder / "stages" / "first" / "model" / "effkit.safetensors"
    cut(weights_file)
    with pytest.raises(RunError, match="stage 'first' finished, but its saved model is damaged"):
        Runner(recipe(), folder, progress=False, cache=False).run()
    with caplog.at_level(logging.WARNING):
        Runner(recipe(), folder, progress=False, cache=True).run()
    assert "taking the cached copy" in caplog.text
    load(folder / "stages" / "first" / "model")


def test_a_second_run_on_a_folder_in_use_is_refused_at_once(tmp_path):
    folder = tmp_path / "run"
    with hold(folder), pytest.raises(RunError, match=rf"in use by process {os.getpid()} on "):
        Runner(recipe(), folder, progress=False).run()
    assert not (folder / "manifest.json").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = {"pid": 2**22 + 17, "host": "here", "command": "effkit apply", "started": "then"}
    (folder / ".lock").write_text(json.dumps(dead))
    with caplog.at_level(logging.INFO):
        Runner(recipe(), folder, progress=False, benchmark=False).run()
    assert "taking over the lock of a run that ended" in caplog.text
    assert (folder / ".lock").read_text() == ""  # released at the end
