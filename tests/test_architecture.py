"""The shape of the code: the core knows no technique, imports no cycle, keeps its privates.

These read the source (an AST walk), so a change that breaks the architecture fails here with
the file and line, before it can be relied on:

- no module of the core (``effkit/``) imports a plugin package (``effkit_*``);
- no import cycle among the core's modules (imports inside functions count; those under
  ``if TYPE_CHECKING:`` do not, as they never run);
- no module uses another of the project's modules' private (underscore) names;
- plugins use only the names the ``effkit`` package exports, and never import each other;
- every module says in its first docstring line what it owns, and none grows past 500 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import effkit

ROOT = Path(__file__).parents[1]
CORE = ROOT / "effkit"
PLUGINS = ROOT / "plugins"
MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    module: str
    """The module imported from (absolute)."""
    names: tuple[str, ...]
    """The names taken from it (empty for ``import x``)."""
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path) -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield module_name(path, root.parent), path, ast.parse(path.read_text(encoding="utf-8"))


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, module: str, is_package: bool, *, runtime: bool) -> list[Import]:
    """Every import in ``tree``; with ``runtime``, not those under ``if TYPE_CHECKING:``."""
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if runtime and isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, (), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


CORE_SOURCES = list(sources(CORE))
CORE_MODULES = {name for name, _, _ in CORE_SOURCES}
PLUGIN_SOURCES = list(sources(PLUGINS))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_core_imports_no_plugin():
    bad = [
        f"{where(path, imp.line)}: imports {imp.module}"
        for name, path, tree in CORE_SOURCES
        for imp in imports(tree, name, path.name == "__init__.py", runtime=False)
        if imp.module.split(".")[0].startswith("effkit_")
    ]
    assert not bad, "the core must reach plugins through the contract:\n" + "\n".join(bad)


def core_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports when it runs (a name from a package whose
    submodule it is counts as that submodule)."""
    graph: dict[str, set[str]] = {name: set() for name in CORE_MODULES}
    for name, path, tree in CORE_SOURCES:
        for imp in imports(tree, name, path.name == "__init__.py", runtime=True):
            if imp.module not in CORE_MODULES:
                continue
            targets = {f"{imp.module}.{n}" for n in imp.names} & CORE_MODULES
            if not targets or len(targets) < len(imp.names):
                targets.add(imp.module)  # some name is an attribute of the module itself
            graph[name] |= targets - {name}
    return graph


def test_the_core_has_no_import_cycle():
    graph = core_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_another_modules_private_names():
    bad: list[str] = []
    for name, path, tree in [*CORE_SOURCES, *PLUGIN_SOURCES]:
        modules: set[str] = set()  # local names bound to imported modules
        for imp in imports(tree, name, path.name == "__init__.py", runtime=False):
            if imp.module == name or not imp.module.startswith("effkit"):
                continue  # the project's own modules; other libraries' privates are theirs
            bad += [f"{where(path, imp.line)}: {imp.module}.{n}" for n in imp.names if _private(n)]
            if not imp.names:
                modules.add(imp.module.split(".")[0])
            modules.update(n for n in imp.names if f"{imp.module}.{n}" in CORE_MODULES)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                bad.append(f"{where(path, node.lineno)}: {node.value.id}.{node.attr}")
    assert not bad, "private names used from another module:\n" + "\n".join(bad)


def test_plugins_use_the_public_api_only():
    public = set(effkit.__all__)
    bad: list[str] = []
    for name, path, tree in PLUGIN_SOURCES:
        own = name.split(".")[0]
        for imp in imports(tree, name, path.name == "__init__.py", runtime=False):
            top = imp.module.split(".")[0]
            if imp.module == "effkit":
                bad += [f"{where(path, imp.line)}: effkit.{n} is not public"
                        for n in imp.names if n not in public]  # fmt: skip
            elif top == "effkit":
                bad.append(f"{where(path, imp.line)}: imports {imp.module}, not effkit")
            elif top.startswith("effkit_") and top != own:
                bad.append(f"{where(path, imp.line)}: imports the plugin {top}")
    assert not bad, "plugins must use `from effkit import ...` names only:\n" + "\n".join(bad)


def test_every_module_says_what_it_owns_and_stays_readable():
    bad: list[str] = []
    for _, path, tree in [*CORE_SOURCES, *PLUGIN_SOURCES]:
        doc = ast.get_docstring(tree)
        if not doc or not doc.splitlines()[0].strip():
            bad.append(f"{path.relative_to(ROOT)}: no docstring saying what the module owns")
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            bad.append(f"{path.relative_to(ROOT)}: {lines} lines (split it by concept)")
    assert not bad, "\n".join(bad)
