"""The example package of docs/plugins.md, read from the guide itself and laid out as installed.

Each ``src/effkit_extras/NAME.py`` code block of the guide becomes a module of a package
``effkit_extras`` in a temporary site folder, with a ``.dist-info`` whose ``entry_points.txt``
holds every entry point the guide's ``pyproject.toml`` blocks name: what ``pip install -e .``
of the guide's package would leave, so the tests run the guide's code as a reader would.
"""

from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).parents[1] / "docs" / "plugins.md"
PACKAGE = "effkit_extras"
_MODULE = re.compile(r"`src/effkit_extras/(\w+)\.py`:\s*```python\n(.*?)```", re.S)
_TOML = re.compile(r"```toml\n(.*?)```", re.S)


def modules() -> dict[str, str]:
    """Module name -> source, for every module of the guide's package."""
    return {name: source for name, source in _MODULE.findall(GUIDE.read_text(encoding="utf-8"))}


def entry_points() -> dict[str, dict[str, str]]:
    """Entry-point group -> {name: "module:Class"}, from the guide's pyproject.toml blocks."""
    groups: dict[str, dict[str, str]] = {}
    for block in _TOML.findall(GUIDE.read_text(encoding="utf-8")):
        group = None
        for line in block.splitlines():
            header = re.fullmatch(r'\[project\.entry-points\."([\w.]+)"\]', line.strip())
            if header:
                group = header.group(1)
                groups.setdefault(group, {})
            elif line.strip().startswith("[") or not line.strip():
                group = None if line.strip().startswith("[") else group
            elif group is not None and "=" in line:
                name, value = (part.strip().strip('"') for part in line.split("=", 1))
                groups[group][name] = value
    return groups


def install(site: Path) -> None:
    """Write the guide's package and its distribution metadata into ``site``."""
    package = site / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, source in modules().items():
        (package / f"{name}.py").write_text(source)
    info = site / "effkit_extras-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: effkit-extras\nVersion: 0.1.0\n")
    lines = []
    for group, names in entry_points().items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in names.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
