"""Fuzzing what a user can give: recipe text, ``--set`` overrides, command lines, standard input.

Whatever it is, the recipe loader returns a recipe or raises an :class:`EffkitError` with a
message, and the command line exits 0, 1 or 2; exit 2 prints one message, never a traceback,
and writes nothing.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from effkit import registry
from effkit.bench import BenchConfig
from effkit.cli import main
from effkit.console import switches
from effkit.data import DataConfig
from effkit.errors import EffkitError
from effkit.models import ModelConfig
from effkit.recipe import EvalConfig, Recipe, StageConfig, parse_recipe
from effkit.task import Task
from effkit.train import TrainConfig

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "recipes" / "tiny.yaml"
SHIPPED = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "recipes").glob("*.yaml"))}
RECIPES = {name: text for name, text in SHIPPED.items() if "space" not in yaml.safe_load(text)} | {
    "tiny.yaml": TINY.read_text(encoding="utf-8")
}
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is downloaded (the stage cache is already private to each test: conftest)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")


SCALE = float(os.environ.get("EFFKIT_FUZZ_SCALE", "1"))
"""More examples per property for a longer hunt: EFFKIT_FUZZ_SCALE=20 pytest tests/test_fuzz.py."""
PARSE = settings(
    max_examples=int(150 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CLI = settings(
    max_examples=int(60 * SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _field_names() -> list[str]:
    models: list[type[BaseModel]] = [Recipe, ModelConfig, Task, DataConfig, StageConfig,
                                     TrainConfig, EvalConfig, BenchConfig]  # fmt: skip
    for group in registry.GROUPS:
        models += [registry.get(group, name) for name in registry.names(group)]
    names = {name for model in models for name in model.model_fields}
    return sorted(names | {"from", "name"})


FIELDS = _field_names()
PLUGINS = sorted(name for group in registry.GROUPS for name in registry.names(group))
WORDS = [*FIELDS, *PLUGINS, "finetune", "prime", "initial", "builtin:synthetic", "preset:tiny",
         "preset:huge", "cpu", "cuda:7", "auto", "train", "validation", "test", "-", ".", "..",
         "a/b", "../../x", "", " ", "~", "null", "0", "-1"]  # fmt: skip

# --------------------------------------------------------------------------- strategies

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 2, 2**31, 2**32, 2**63, 2**64, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 0.5]),
)
TEXT = st.one_of(st.text(max_size=16), st.sampled_from(WORDS))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10), st.integers(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def plugin_specs(group: str) -> st.SearchStrategy[Any]:
    """Specs of the group's plugins: each field its default, a random value, or left out."""
    specs = []
    for name in registry.names(group):
        fields = {}
        for field, info in registry.get(group, name).model_fields.items():
            fields[field] = VALUES
            if not info.is_required():
                default = to_jsonable_python(info.get_default(call_default_factory=True))
                fields[field] = st.just(default) | VALUES
        specs.append(st.fixed_dictionaries({"name": st.just(name)}, optional=fields))
    return st.one_of(st.sampled_from(registry.names(group)), *specs, VALUES)


TRANSFORM_SPECS = plugin_specs(registry.TRANSFORMS)
OBJECTIVE_SPECS = plugin_specs(registry.OBJECTIVES)
STAGES = st.fixed_dictionaries(
    {"name": st.sampled_from(["finetune", "prime", "s1"]) | TEXT},
    optional={
        "from": TEXT,
        "transforms": st.lists(TRANSFORM_SPECS, max_size=3) | VALUES,
        "objective": OBJECTIVE_SPECS,
        "train": st.dictionaries(
            st.sampled_from(list(TrainConfig.model_fields)) | KEYS, VALUES, max_size=4
        )
        | VALUES,
    },
)
RECIPE_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "name": TEXT,
        "seed": NUMBERS,
        "model": st.dictionaries(st.sampled_from(list(ModelConfig.model_fields)), VALUES) | VALUES,
        "task": st.dictionaries(st.sampled_from(list(Task.model_fields)), VALUES) | VALUES,
        "data": st.dictionaries(st.sampled_from(list(DataConfig.model_fields)), VALUES) | VALUES,
        "stages": st.lists(STAGES, max_size=3) | VALUES,
        "evaluate": st.dictionaries(st.sampled_from(list(EvalConfig.model_fields)), VALUES),
        "benchmark": st.dictionaries(st.sampled_from(list(BenchConfig.model_fields)), VALUES),
        "description": VALUES,
    },
)
YAMLISH = st.text(alphabet=st.sampled_from(list("ab1:-[]{}&*!|>'\"#\n\t ,.?%@`~<=\\")), max_size=60)
LENIENT_TEXT = st.one_of(
    st.text(max_size=200),
    YAMLISH,
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace")),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def flow(value: Any) -> str:
    """``value`` as one line of YAML, as a user types it after ``--set PATH=``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def paths(value: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a YAML document, the root included."""
    found = [loc]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*loc, i))
    return found


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for item in loc:
        data = data[item]
    return data


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A shipped recipe with a few keys dropped, values retyped and keys inserted."""
    data = yaml.safe_load(RECIPES[draw(st.sampled_from(sorted(RECIPES)))])
    for _ in range(draw(st.integers(1, 3))):
        loc = draw(st.sampled_from(paths(data)))
        kind = draw(st.sampled_from(["drop", "value", "retype", "insert", "name"]))
        parent, node = (_at(data, loc[:-1]), _at(data, loc)) if loc else (None, data)
        if kind == "drop" and loc:
            del parent[loc[-1]]
        elif kind == "value" and loc:
            parent[loc[-1]] = draw(VALUES)
        elif kind == "retype" and loc:
            parent[loc[-1]] = draw(st.sampled_from([str(node), [node], {"x": node}, None]))
        elif kind == "insert" and isinstance(node, dict):
            node[draw(KEYS)] = draw(VALUES)
        elif kind == "insert" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(VALUES))
        elif kind == "name":
            names = [p for p in paths(data) if p and p[-1] == "name"]
            if names:
                where = draw(st.sampled_from(names))
                _at(data, where[:-1])["name"] = draw(TEXT | NUMBERS)
    text = dump(data)
    if draw(st.booleans()):  # and at the text level: a line dropped, doubled or cut
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        edit = draw(st.sampled_from(["drop", "double", "cut", "indent"]))
        if lines and edit == "drop":
            del lines[i]
        elif lines and edit == "double":
            lines.insert(i, lines[i])
        elif lines and edit == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))] + "\n"
        elif lines:
            lines[i] = draw(st.sampled_from([" ", "  ", "\t", "- "])) + lines[i]
        text = "".join(lines)
    return text


@st.composite
def overrides(draw: st.DrawFn, recipe: str) -> list[str]:
    """``--set PATH=VALUE`` items: paths of the recipe, or next to them, and random values."""
    data = yaml.safe_load(recipe)
    known = [p for p in paths(data) if p]
    items = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(known)) if known else ()
        loc = list(where)
        for i, part in enumerate(where):  # list items go by name (stages.finetune) or index
            if isinstance(part, int) and draw(st.booleans()):
                entry = _at(data, where[: i + 1])
                if isinstance(entry, dict) and "name" in entry:
                    loc[i] = entry["name"]
        if draw(st.booleans()):
            loc.append(draw(TEXT | st.sampled_from(["0", "-1", "99", "²", "--0", "-"])))
        if loc and draw(st.integers(0, 4)) == 0:
            loc[draw(st.integers(0, len(loc) - 1))] = draw(TEXT)
        path = ".".join(str(p) for p in loc)
        value = draw(st.one_of(
            st.just(flow(_at(data, where))), NUMBERS.map(flow), VALUES.map(flow), TEXT, YAMLISH,
            st.sampled_from(["null", "~", ".nan", ".inf", "-.inf", "1e400", "&a [*a]",
                             "[" * 200 + "]" * 200, "!!python/object:os.system ls",
                             "{a: 1, a: 2}", "*x", "'", "[", "0x1F", "1_000"]),
        ))  # fmt: skip
        shapes = [f"{path}={value}"] * 4 + [path, f"={value}", value]
        items.append(draw(st.sampled_from(shapes)))
    return items


def check_parse(text: str, sets: list[str] | None = None) -> Recipe | None:
    """The property: a recipe, or an EffkitError with a message; nothing else."""
    try:
        recipe = parse_recipe(text, source="fuzz.yaml", overrides=sets or [])
    except EffkitError as exc:
        assert str(exc).strip(), "an error without a message"
        event(type(exc).__name__)
        return None
    assert isinstance(recipe, Recipe)
    event("a recipe")
    # what a run does first with a recipe: resolve its plugins and write it out
    for stage in recipe.stages:
        stage.resolved_plugins()
    again = parse_recipe(recipe.to_yaml(), source="resolved.yaml")
    assert again.model_dump() == recipe.model_dump()
    return recipe


# --------------------------------------------------------------------------- the recipe loader


@PARSE
@given(LENIENT_TEXT)
@example("a: &a [*a]\n")  # an alias inside itself: infinitely deep
@example("a: " + "[" * 5000 + "]" * 5000)  # nesting deeper than the stack
@example("name: x\x00\n")  # a character YAML does not allow
def test_any_text_is_a_recipe_or_one_error(text: str) -> None:
    check_parse(text)


@PARSE
@given(st.one_of(VALUES, RECIPE_DOCS).map(dump))
def test_any_yaml_document_is_a_recipe_or_one_error(text: str) -> None:
    check_parse(text)


@PARSE
@given(st.lists(STAGES, max_size=3))
def test_generated_stages_in_a_valid_recipe_are_a_recipe_or_one_error(stages: list[Any]) -> None:
    check_parse(dump({**yaml.safe_load(RECIPES["tiny.yaml"]), "stages": stages}))


@PARSE
@given(mutated())
def test_mutated_shipped_recipes_are_recipes_or_one_error(text: str) -> None:
    check_parse(text)


def _with_overrides(name: str) -> st.SearchStrategy[tuple[str, list[str]]]:
    return st.tuples(st.just(RECIPES[name]), overrides(RECIPES[name]))


@PARSE
@given(st.sampled_from(sorted(RECIPES)).flatmap(_with_overrides))
@example((RECIPES["tiny.yaml"], ["stages.²=1"]))  # a digit int() does not read
@example((RECIPES["tiny.yaml"], ["stages.--0.name=x"]))
@example((RECIPES["tiny.yaml"], ["description=" + "[" * 5000 + "]" * 5000]))
@example((RECIPES["tiny.yaml"], ["stages.finetune.objective={name: task, x: &a [*a]}"]))
def test_overrides_give_a_recipe_or_one_error(case: tuple[str, list[str]]) -> None:
    check_parse(*case)


TINY_NO_SOURCE = RECIPES["tiny.yaml"].replace("  source: builtin:synthetic\n", "")


def test_errors_name_the_line_and_the_field() -> None:
    cases = [
        ("name: x\nb: &a [1, *a]\n", [], "fuzz.yaml:2: the YAML document nests"),
        ("a:\n  b: " + "[" * 100 + "]" * 100, [], "fuzz.yaml:2: the YAML document nests"),
        ("name: x\n\nseed: \x07\n", [], "fuzz.yaml:3: malformed YAML: character U+0007"),
        (RECIPES["tiny.yaml"], ["seed=" + "[" * 100 + "]" * 100], "--set 'seed=[[[["),
        (RECIPES["tiny.yaml"], ["stages.²=1"], "'stages' has no item named '²'"),
        (RECIPES["tiny.yaml"], ["seed=[1"], "--set 'seed=[1': malformed YAML"),
        (RECIPES["tiny.yaml"], ["seed=4294967296"], "seed: Input should be less than or equal"),
        # a missing field is named; a stage whose name is not a name goes by its index
        (TINY_NO_SOURCE, [], "fuzz.yaml:7: data.source: Field required"),
        (RECIPES["tiny.yaml"], ["stages.0={train: {}}"], "stages[0].name: Field required"),
        (
            RECIPES["tiny.yaml"],
            ["stages.0.name=[a]"],
            "stages[0].name: Input should be a valid str",
        ),
        # the branches of a union say it once, and a key read as a number is named
        (RECIPES["tiny.yaml"], ["stages.0.objective=3"], "a valid string, or a valid dictionary"),
        (RECIPES["tiny.yaml"], ["stages.0.objective={1: 2}"], "key 1 is not a string (quote"),
    ]
    for text, sets, expected in cases:
        with pytest.raises(EffkitError) as caught:
            parse_recipe(text, source="fuzz.yaml", overrides=sets)
        assert expected in str(caught.value), str(caught.value)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny saved model with its tokenizer: what ``predict`` reads."""
    from effkit.models import load_model, save

    return save(load_model("preset:tiny", labels=["a", "b"]), tmp_path_factory.mktemp("m") / "m")


class Sandbox:
    """A fresh empty working folder per example, with a few bad model and input paths."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(dir=root))
        os.chdir(self.dir)
        (self.dir / "folder").mkdir()
        (self.dir / "garbage.bin").write_bytes(bytes(range(256)))
        bad = self.dir / "bad-model"
        bad.mkdir()
        (bad / "effkit.json").write_text('{"format": "effkit-model", "task": 3}')
        (self.dir / "half.json").write_text("{")
        self.before = self.listing()

    def listing(self) -> set[Path]:
        return set(self.dir.rglob("*"))

    def bad_paths(self) -> list[str]:
        return ["missing", "missing/deeper", "folder", "garbage.bin", "bad-model", "half.json",
                str(self.dir / "nope" / "x.yaml"), ""]  # fmt: skip


def cli(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes = b"") -> tuple[int, str]:
    """Exit code and output of ``effkit ARGV``, having checked the property on them."""
    switches.debug = False
    before, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        main(argv)
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.stdin = before
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    if currently_in_test_context():
        event(f"{next((a for a in argv if a in COMMANDS), '(no command)')}: exit {code}")
    assert code in (0, 1, 2), (argv, code, shown)
    if code == 2:
        assert TRACEBACK not in shown, (argv, shown)
        assert shown.strip(), (argv, "exit 2 without a message")
    return int(code), shown


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes = b"") -> int:
    """Exit code of ``effkit ARGV`` (see :func:`cli`)."""
    return cli(argv, capsys, stdin)[0]


OPTION_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "-0", "1e9", "99999999999999999999999", "nan", "inf",
                     "-inf", "abc", "", " ", "1.5", "0x10", "--", "-", "true", "cuda:99",
                     "cuda", "mps", "cpu", "median", "best", "onnx", "hf", "json",
                     "markdown", "test", "validation", "train", "tsv", "jsonl", "lines"]),
    st.integers().map(str),
    st.text(max_size=8),
)  # fmt: skip
COMMAND_OPTIONS = {
    "bench": ["--baseline", "--batch-size", "--seq-len", "--warmup", "--trials", "--statistic",
              "--batches", "--min-trial-seconds", "--threads", "--device", "--data", "--split",
              "--data-limit", "--set", "--json", "--memory", "--runtimes"],
    "eval": ["--data", "--split", "--set", "--batch-size", "--inference-seed", "--ensemble",
             "--json"],
    "predict": ["--input", "-i", "--format", "--text-field", "--pair-field", "--batch-size"],
    "export": ["--format", "--output", "--batch-size", "--seq-len", "--check", "--no-check",
               "--bench", "--trials", "--batches", "--threads", "--json"],
    "schema": ["--output", "--format"],
    "validate": ["--set"],
    "apply": ["--set", "--run-dir", "--no-cache", "--no-bench"],
}  # fmt: skip
FLAGS = {"--memory", "--runtimes", "--check", "--no-check", "--bench", "--no-cache", "--no-bench"}


@st.composite
def options(draw: st.DrawFn, command: str, sandbox_paths: list[str]) -> list[str]:
    argv: list[str] = []
    for option in draw(st.lists(st.sampled_from(COMMAND_OPTIONS[command]), max_size=4)):
        argv.append(option)
        if option not in FLAGS:
            argv.append(draw(OPTION_VALUES | st.sampled_from(sandbox_paths)))
    return argv


@CLI
@given(data=st.data())
def test_model_commands_with_bad_paths_and_options_exit_2(
    data: st.DataObject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    command = data.draw(st.sampled_from(["bench", "eval", "predict", "export"]))
    model = data.draw(st.sampled_from(box.bad_paths()))
    argv = [command, model, *data.draw(options(command, box.bad_paths()))]
    if command == "eval" and data.draw(st.booleans()):
        argv += ["--data", data.draw(OPTION_VALUES | st.sampled_from(box.bad_paths()))]
    argv = data.draw(st.permutations(argv)) if data.draw(st.integers(0, 5)) == 0 else argv
    code = run_cli(argv, capsys)
    assert code == 2, argv
    assert box.listing() == box.before, (argv, "an error wrote files")


@CLI
@given(data=st.data())
def test_predict_with_any_input_bytes(
    data: st.DataObject,
    saved_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    stdin = data.draw(st.one_of(
        st.binary(max_size=120),
        st.text(max_size=120).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
        st.sampled_from([b"", b"\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbfhi\n", b"a\x00b", b"\r\r"]),
    ))  # fmt: skip
    argv = ["predict", str(saved_model), *data.draw(options("predict", [*box.bad_paths(), "-"]))]
    code = run_cli(argv, capsys, stdin)
    assert code in (0, 2)
    assert box.listing() == box.before


@CLI
@given(data=st.data())
def test_eval_of_a_model_with_bad_data_exits_2(
    data: st.DataObject,
    saved_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    (box.dir / "rows.csv").write_bytes(data.draw(st.binary(max_size=60)))
    (box.dir / "rows.jsonl").write_text(data.draw(st.text(max_size=60)), encoding="utf-8")
    box.before = box.listing()
    source = data.draw(st.sampled_from([*box.bad_paths(), "rows.csv", "rows.jsonl",
                                        "builtin:nope", "builtin:", "missing.csv"]))  # fmt: skip
    extra = data.draw(options("eval", box.bad_paths()))
    extra = [
        v for i, v in enumerate(extra) if not (extra[i - 1 : i] == ["--data"] or v == "--data")
    ]
    code = run_cli(["eval", str(saved_model), "--data", source, *extra], capsys)
    assert code == 2
    assert box.listing() == box.before


@CLI
@given(data=st.data())
def test_validate_any_recipe_file_with_any_set(
    data: st.DataObject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    (box.dir / "pareto_base.yaml").write_text(SHIPPED["pareto_base.yaml"], encoding="utf-8")
    name = data.draw(st.sampled_from(sorted(RECIPES)))
    text = data.draw(st.one_of(mutated(), LENIENT_TEXT, st.just(RECIPES[name]),
                               st.just(SHIPPED["pareto_search.yaml"])))  # fmt: skip
    raw = text.encode("utf-8", errors="surrogatepass")
    if data.draw(st.integers(0, 5)) == 0:
        raw = data.draw(st.binary(max_size=100))
    (box.dir / "r.yaml").write_bytes(raw)
    box.before = box.listing()
    argv = ["validate", data.draw(st.sampled_from(["r.yaml", *box.bad_paths()]))]
    for item in data.draw(overrides(RECIPES[name])) if data.draw(st.booleans()) else []:
        argv += ["--set", item]
    run_cli(argv, capsys)
    assert box.listing() == box.before


@CLI
@given(data=st.data())
def test_apply_of_an_invalid_recipe_exits_2_and_writes_nothing(
    data: st.DataObject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    name = data.draw(st.sampled_from(sorted(RECIPES)))
    text = data.draw(st.one_of(mutated(), LENIENT_TEXT, st.just(RECIPES[name])))
    sets = data.draw(overrides(RECIPES[name])) if data.draw(st.booleans()) else []
    try:
        parse_recipe(text, source="r.yaml", overrides=sets)
    except EffkitError:
        pass
    else:
        assume(False)  # a valid recipe would start training
    (box.dir / "r.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    box.before = box.listing()
    argv = ["apply", "r.yaml", "--run-dir", str(box.dir / "run")]
    argv += [f for f in ("--no-cache", "--no-bench") if data.draw(st.booleans())]
    for item in sets:
        argv += ["--set", item]
    assert run_cli(argv, capsys) == 2
    assert not (box.dir / "run").exists()
    assert box.listing() == box.before
    assert not any(Path(os.environ["EFFKIT_CACHE"]).iterdir())


COMMANDS = ["apply", "validate", "schema", "plugins", "bench", "eval", "predict", "export",
            "search", "nope", "--help"]  # fmt: skip
ARGV_TOKENS = st.one_of(
    st.sampled_from([*COMMANDS, "-q", "--quiet", "--version", "--format", "--output", "--set",
                     "--run-dir", "--data", "--bogus", "-x", "--", "-", "="]),
    OPTION_VALUES,
)  # fmt: skip
ARGVS = st.tuples(
    st.lists(st.sampled_from(["-q", "--quiet", "--no-debug", "--bogus"]), max_size=1),
    st.sampled_from(COMMANDS) | ARGV_TOKENS,
    st.lists(ARGV_TOKENS, max_size=5),
).map(lambda parts: [*parts[0], parts[1], *parts[2]])


@CLI
@given(argv=ARGVS)
@example(argv=[])
@example(argv=["schema", "--output", "folder"])  # a folder where a file is written
@example(argv=["schema", "--output", "missing/deeper/schema.json"])
def test_any_command_line_exits_0_1_or_2(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    box = Sandbox(tmp_path)
    code = run_cli(argv, capsys)
    if code != 0:
        assert box.listing() == box.before, (argv, "a failed command wrote files")


def test_a_run_folder_that_cannot_be_made_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    argv = ["apply", str(TINY), "--run-dir", str(tmp_path / "file" / "run")]
    code, shown = cli(argv, capsys)
    assert code == 2 and "file/run: Not a directory" in " ".join(shown.split())


def test_predict_with_a_model_saved_without_a_tokenizer_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = ROOT / "tests" / "fixtures" / "saved" / "v1" / "plain"  # saved with no tokenizer
    assert run_cli(["predict", str(plain)], capsys, b"some text\n") == 2


def test_predict_with_standard_input_closed_exits_2(
    saved_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # effkit predict MODEL <&-
    switches.debug = False
    with pytest.raises(SystemExit) as caught:
        main(["predict", str(saved_model)])
    assert caught.value.code == 2
    assert TRACEBACK not in capsys.readouterr().err


def test_schema_and_plugins_still_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["schema"], capsys) == 0
    assert (
        run_cli(["schema", "--format", "markdown", "--output", str(tmp_path / "r.md")], capsys) == 0
    )
    assert (tmp_path / "r.md").read_text().startswith("# Recipe reference")
    assert run_cli(["plugins"], capsys) == 0
    assert run_cli(["validate", str(TINY)], capsys) == 0
