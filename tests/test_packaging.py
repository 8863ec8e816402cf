"""What a non-editable install carries: every package, and the shipped recipes and schemas as
package data that ``effkit recipes`` finds."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _source_packages() -> set[str]:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "effkit").rglob("__init__.py")
    }
    found |= {init.parent.name for init in (ROOT / "plugins").glob("*/__init__.py")}
    return found | {"effkit.recipes"}


def test_the_package_list_matches_the_source_tree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed == _source_packages()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = out.glob("effkit-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_the_recipes_and_their_schemas(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (ROOT / "recipes").iterdir():
        if recipe.suffix in (".yaml", ".json"):
            assert f"effkit/recipes/{recipe.name}" in names
    for package in _source_packages():
        assert f"{package.replace('.', '/')}/__init__.py" in names or package == "effkit.recipes"


@pytest.mark.slow
def test_an_installed_effkit_lists_and_copies_its_recipes(wheel, tmp_path):
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)  # what pip puts in site-packages
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = (
        "import effkit, effkit.shipped as s; "
        "print(effkit.__file__); print(s.recipes_dir()); print(len(s.shipped()))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, folder, count = proc.stdout.split()
    assert module.startswith(str(target)) and folder == str(target / "effkit" / "recipes")
    assert int(count) == len(list((ROOT / "recipes").glob("*.yaml")))
    proc = subprocess.run(
        [sys.executable, "-m", "effkit.cli", "recipes", "copy", "mux2_cofi"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    copied = (tmp_path / "mux2_cofi.yaml").read_text(encoding="utf-8")
    schema = (target / "effkit" / "recipes" / "recipe.schema.json").as_uri()
    assert copied.startswith(f"# yaml-language-server: $schema={schema}\n")
