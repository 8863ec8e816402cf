"""Runs: the run folder, resume after a stop, the stage cache, determinism."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch
from pydantic import Field

from effkit import StageRef, Transform, registry
from effkit.errors import DataError, RunError
from effkit.models import load
from effkit.recipe import load_recipe, parse_recipe
from effkit.runner import run

TWO_STAGES = textwrap.dedent(
    """\
    name: two
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 32}
    stages:
      - name: first
        train: {steps: 12, batch_size: 8, lr: 2.0e-3, checkpoint_every: 4}
      - name: second
        transforms: [{name: keep-layers, layers: [0]}]
        train: {steps: 8, batch_size: 8, lr: 2.0e-3, checkpoint_every: 4}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1}
    """
)


def recipe(text: str = TWO_STAGES, overrides: list[str] | None = None):
    return parse_recipe(text, source="two.yaml", overrides=overrides)


def runner_with_data(r, folder):
    """A runner whose data is loaded, for its stage keys and initial model."""
    from effkit.data import load_task_data
    from effkit.runner import Runner

    runner = Runner(r, run_dir=folder, progress=False)
    runner.data = load_task_data(r.data, r.task.type, r.task.labels)
    return runner


def test_run_folder_holds_everything(tmp_path, tiny_recipe):
    result = run(tiny_recipe, tmp_path / "run", progress=False)
    folder = tmp_path / "run"
    for name in ("recipe.yaml", "manifest.json", "metrics.json", "bench.json", "report.md"):
        assert (folder / name).is_file(), name
    assert (folder / "stages" / "finetune" / "model" / "effkit.safetensors").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["recipe"] == "tiny" and "finetune" in manifest["stages"]
    assert not (folder / "stages" / "finetune" / "checkpoints").exists()
    report = (folder / "report.md").read_text()
    assert "## Task metrics" in report and "## Throughput" in report and "## Stages" in report
    assert set(result.metrics) == {"validation", "test"}
    # the resolved recipe is itself a valid recipe that names the same stages
    again = load_recipe(folder / "recipe.yaml")
    assert [s.name for s in again.stages] == ["finetune"]
    # the stage's model loads back and scores the same
    model = load(folder / "stages" / "finetune" / "model")
    assert model.task.labels == result.model.task.labels


def test_same_recipe_and_seed_give_the_same_metrics(tmp_path):
    a = run(recipe(), tmp_path / "a", progress=False, cache=False, benchmark=False)
    b = run(recipe(), tmp_path / "b", progress=False, cache=False, benchmark=False)
    assert a.metrics == b.metrics
    assert a.stages["second"]["train"]["history"] == b.stages["second"]["train"]["history"]


def test_rerun_resumes_without_training_again(tmp_path):
    first = run(recipe(), tmp_path / "run", progress=False, benchmark=False)
    stamp = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    second = run(recipe(), tmp_path / "run", progress=False, benchmark=False)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"] == stamp
    assert first.metrics == second.metrics


def test_changed_last_stage_reuses_the_first_from_the_cache(tmp_path):
    run(recipe(), tmp_path / "a", progress=False, benchmark=False)
    changed = recipe(overrides=["stages.second.train.steps=4"])
    run(changed, tmp_path / "b", progress=False, benchmark=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["stages"]["first"]["from_cache"] is True
    assert manifest["stages"]["second"]["from_cache"] is False


def test_stage_keys_follow_what_a_stage_computes_not_how_it_logs(tmp_path):
    def keys(overrides):
        return runner_with_data(recipe(overrides=overrides), tmp_path / "run")._stage_keys()

    base = keys([])
    assert keys(["stages.second.train.log_every=3"]) == base
    faster = keys(["stages.second.train.lr=1.0e-2"])
    assert faster["first"] == base["first"] and faster["second"] != base["second"]
    # plugins count with their defaults: the same objective spelled out is the same stage...
    assert keys(["stages.first.objective={name: task, label_smoothing: 0.0}"]) == base
    # ...and a field that differs from the default is another one
    smoothed = keys(["stages.first.objective={name: task, label_smoothing: 0.1}"])
    assert smoothed["first"] != base["first"] and smoothed["second"] != base["second"]


def test_interrupted_stage_resumes_from_its_checkpoint_with_the_same_result(tmp_path, probe):
    text = TWO_STAGES.replace(
        "transforms: [{name: keep-layers, layers: [0]}]",
        "transforms: [{name: keep-layers, layers: [0]}, {name: probe}]",
    )
    reference = run(recipe(text), tmp_path / "ref", progress=False, cache=False, benchmark=False)
    probe.interrupt_at = 6  # Ctrl-C during the forward pass of the second stage's 7th step
    with pytest.raises(KeyboardInterrupt):
        run(recipe(text), tmp_path / "run", progress=False, cache=False, benchmark=False)
    # the first stage is complete; the second saved the 6 steps it had finished
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["first"]
    checkpoint = tmp_path / "run/stages/second/checkpoints/last/progress.json"
    assert json.loads(checkpoint.read_text())["step"] == 6
    probe.interrupt_at = None
    resumed = run(recipe(text), tmp_path / "run", progress=False, cache=False, benchmark=False)
    assert resumed.stages["second"]["train"]["resumed_from"] == 6
    assert resumed.metrics == reference.metrics
    ref_model = load(tmp_path / "ref/stages/second/model")
    for (name, a), (_, b) in zip(
        ref_model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_checkpoint_of_another_configuration_is_discarded(tmp_path, probe):
    text = TWO_STAGES.replace("layers: [0]}]", "layers: [0]}, {name: probe}]")
    probe.interrupt_at = 6
    with pytest.raises(KeyboardInterrupt):
        run(recipe(text), tmp_path / "run", progress=False, cache=False, benchmark=False)
    probe.interrupt_at = None
    changed = recipe(text, ["stages.second.train.lr=1.0e-3"])
    result = run(changed, tmp_path / "run", progress=False, cache=False, benchmark=False)
    assert result.stages["second"]["train"]["resumed_from"] is None


def test_run_folder_of_another_recipe_is_refused(tmp_path, tiny_recipe):
    run(recipe(), tmp_path / "run", progress=False, benchmark=False)
    with pytest.raises(RunError, match="belongs to recipe 'two'"):
        run(tiny_recipe, tmp_path / "run", progress=False)


def test_non_empty_folder_without_manifest_is_refused(tmp_path, tiny_recipe):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        run(tiny_recipe, tmp_path / "run", progress=False)


def test_bad_data_leaves_nothing_behind(tmp_path):
    text = TWO_STAGES.replace("builtin:synthetic", str(tmp_path / "missing.csv"))
    with pytest.raises(DataError):
        run(recipe(text), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_label_outside_the_task_is_refused_before_training(tmp_path):
    csv = tmp_path / "d.csv"
    rows = ["text,label"] + [f"text number {i},{'a' if i % 2 else 'b'}" for i in range(40)]
    csv.write_text("\n".join(rows) + "\n")
    text = TWO_STAGES.replace("builtin:synthetic", str(csv)).replace(
        "model: {source: preset:tiny}", "model: {source: preset:tiny}\ntask: {labels: [a, c]}"
    )
    with pytest.raises(DataError, match="'b'"):
        run(recipe(text), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_max_length_beyond_the_models_positions_is_refused_before_training(tmp_path):
    from effkit.errors import RecipeError

    with pytest.raises(RecipeError, match=r"data\.max_length: 100000 tokens per input is longer"):
        run(recipe(overrides=["data.max_length=100000"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_python_api_runs_a_recipe_object(tmp_path, tiny_recipe):
    spec = load_recipe(tiny_recipe, ["stages.finetune.train.steps=5"])
    result = run(spec, tmp_path / "api", progress=False, benchmark=False)
    assert result.stages["finetune"]["train"]["steps"] == 5
    assert result.report.is_file()
    predictions = result.model.predict(["a sentence", "another one"])
    assert len(predictions) == 2
    shutil.rmtree(tmp_path / "api")


TEACHER_BESIDE = textwrap.dedent(
    """\
    name: beside
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 32}
    stages:
      - name: teacher
        train: {steps: 8, batch_size: 8, lr: 2.0e-3}
      - name: student
        from: initial
        transforms: [{name: keep-layers, layers: [0]}]
        train: {steps: 6, batch_size: 8, lr: 2.0e-3}
      - name: distilled
        transforms: [{name: distill, teacher: teacher, layer_map: none, logit_weight: 1.0}]
        train: {steps: 6, batch_size: 8, lr: 2.0e-3}
    benchmark: {enabled: false}
    """
)


def test_a_stage_can_start_from_the_initial_model_beside_its_teacher(tmp_path):
    # the student stage only cuts layers (no steps): its weights show where it started
    beside = recipe(TEACHER_BESIDE, ["stages.student.train.steps=0"])
    result = run(beside, tmp_path / "run", progress=False, benchmark=False)
    teacher = load(tmp_path / "run" / "stages" / "teacher" / "model")
    student = load(tmp_path / "run" / "stages" / "student" / "model")
    initial = dict(
        runner_with_data(beside, tmp_path / "other").initial_model().hf.named_parameters()
    )
    trained = dict(teacher.hf.named_parameters())
    layer = [name for name, _ in student.hf.named_parameters() if "layer.0." in name]
    assert layer
    for name in layer:
        value = dict(student.hf.named_parameters())[name]
        assert torch.equal(value, initial[name]), name
        assert not torch.equal(value, trained[name]), name
    assert result.stages["distilled"]["transforms"][0]["teacher_rows"] > 0
    # the resolved recipe keeps the field under its YAML name
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "from: initial" in saved and "start" not in saved
    assert [s.start for s in load_recipe(tmp_path / "run" / "recipe.yaml").stages] == [
        None, "initial", None,
    ]  # fmt: skip


def test_a_changed_teacher_stage_changes_the_stage_that_reads_it(tmp_path):
    def keys(overrides):
        return runner_with_data(recipe(TEACHER_BESIDE, overrides), tmp_path / "run")._stage_keys()

    base = keys([])
    other = keys(["stages.teacher.train.steps=4"])
    assert other["student"] == base["student"]  # off the teacher's line
    assert other["distilled"] != base["distilled"]  # but it reads the teacher
    # starting from 'initial' gives the key a stage has at the top of a recipe
    alone = keys(["stages.teacher=null", "stages.distilled=null", "stages.student.from=null"])
    assert alone["student"] == base["student"]


def test_resume_runs_a_missing_teacher_that_a_pending_stage_reads(tmp_path):
    run(recipe(TEACHER_BESIDE), tmp_path / "a", progress=False, benchmark=False)
    # a new run folder finds student in the cache but must still make its teacher
    changed = recipe(TEACHER_BESIDE, ["stages.teacher.train.steps=4"])
    run(changed, tmp_path / "b", progress=False, benchmark=False)
    stages = json.loads((tmp_path / "b" / "manifest.json").read_text())["stages"]
    assert stages["student"]["from_cache"] is True
    assert stages["teacher"]["from_cache"] is False and stages["distilled"]["from_cache"] is False


@pytest.mark.parametrize(
    ("start", "message"),
    [("distilled", "runs after it"), ("nowhere", "not a stage of this recipe")],
)
def test_from_must_name_an_earlier_stage(start, message):
    from effkit.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        recipe(TEACHER_BESIDE, [f"stages.student.from={start}"])


class Tagged(Transform):
    """A transform with a plain string field (which may equal a stage name by chance)."""

    tag: str = ""


class Refers(Transform):
    """A transform that names an earlier stage through a typed reference."""

    source: StageRef | None = None
    also: list[StageRef] = Field(default_factory=list)


THREE_STAGES = TWO_STAGES.replace(
    "benchmark:",
    "  - name: third\n    start: first\n    transforms: [TRANSFORM]\n"
    "    train: {steps: 2, batch_size: 8}\nbenchmark:",
)


@pytest.fixture
def reference_plugins():
    registry.register(registry.TRANSFORMS, "tagged", Tagged)
    registry.register(registry.TRANSFORMS, "refers", Refers)
    yield
    registry.unregister(registry.TRANSFORMS, "tagged")
    registry.unregister(registry.TRANSFORMS, "refers")


@pytest.mark.parametrize(
    ("transform", "needs"),
    [
        ("{name: tagged, tag: second}", {"first"}),
        ("{name: refers}", {"first"}),
        ("{name: refers, source: second}", {"first", "second"}),
        ("{name: refers, also: [second]}", {"first", "second"}),
    ],
)
def test_only_stage_ref_fields_make_a_stage_depend_on_another(
    reference_plugins, tmp_path, transform, needs
):
    runner = runner_with_data(recipe(THREE_STAGES.replace("TRANSFORM", transform)), tmp_path)
    keys = runner._stage_keys()
    assert runner.needs["third"] == needs
    # a stage outside the line of the third one changes its key only when it is referenced
    plain = runner_with_data(recipe(THREE_STAGES.replace("TRANSFORM", "{name: tagged}")), tmp_path)
    other = runner_with_data(
        recipe(THREE_STAGES.replace("TRANSFORM", "{name: tagged}"),
               ["stages.second.train.steps=9"]), tmp_path
    )  # fmt: skip
    assert plain._stage_keys()["third"] == other._stage_keys()["third"]
    if "second" in needs:
        changed = runner_with_data(
            recipe(THREE_STAGES.replace("TRANSFORM", transform), ["stages.second.train.steps=9"]),
            tmp_path,
        )
        assert changed._stage_keys()["third"] != keys["third"]
