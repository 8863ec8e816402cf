"""Reading recipe and search-spec YAML: the document, the line of each of its paths, and limits.

Only safe YAML is read (no tags that build objects). A document is bounded in size, in how deep
it nests and in how far its aliases expand, and a key given twice is an error, so a hostile or
mistyped file is refused in milliseconds with its line rather than exhausting memory or the
stack, or silently keeping the last value.
"""

from __future__ import annotations

from typing import Any

import yaml

from effkit.errors import RecipeError

Loc = tuple[str | int, ...]

MAX_YAML_BYTES = 1 << 20
"""The largest recipe or search spec read (1 MiB; the shipped ones are about 2 KiB)."""
MAX_YAML_NODES = 100_000
"""The most values a document may hold once its aliases are expanded (a bound on alias bombs)."""
MAX_YAML_DEPTH = 64
"""The deepest a document may nest lists and mappings (the shipped recipes nest 5 deep)."""


def _too_deep(mark: yaml.Mark, source: str) -> RecipeError:
    return RecipeError(
        f"the YAML document nests lists and mappings more than {MAX_YAML_DEPTH} levels deep",
        where=f"{source}:{mark.line + 1}",
        hint="nest less; an alias inside what it names, like &a [*a], nests forever",
    )


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a document nested past :data:`MAX_YAML_DEPTH` before composing
    it would exhaust the stack."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _too_deep(self.peek_event().start_mark, self.source)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _checked_lines(root: yaml.Node, source: str) -> dict[Loc, int]:
    """Map each path in a composed YAML document to its 1-based line.

    Walking the tree expands aliases, so it also bounds the document's expanded size (an
    alias bomb is refused after :data:`MAX_YAML_NODES` values, in milliseconds, instead of
    exhausting memory) and depth (an alias inside what it names nests forever), and refuses a
    key given twice in one mapping, naming both lines.
    """
    lines: dict[Loc, int] = {}
    count = 0

    def walk(node: yaml.Node, loc: Loc) -> None:
        nonlocal count
        count += 1
        if count > MAX_YAML_NODES:
            raise RecipeError(
                f"the YAML document expands to more than {MAX_YAML_NODES:,} values",
                where=f"{source}:{node.start_mark.line + 1}",
                hint="aliases (*name) multiply what they refer to; write the values out",
            )
        if len(loc) >= MAX_YAML_DEPTH:
            raise _too_deep(node.start_mark, source)
        lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                k = str(key.value)
                line = key.start_mark.line + 1
                if k in seen and key.tag != "tag:yaml.org,2002:merge":
                    raise RecipeError(
                        f"key '{k}' is given twice in one mapping (lines {seen[k]} and {line})",
                        where=f"{source}:{line}",
                        hint="keep one of them",
                    )
                seen[k] = line
                walk(value, (*loc, k))
                lines[(*loc, k)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    walk(root, ())
    return lines


def read_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """The YAML document in ``text`` and the line of each of its paths.

    A syntax error, a document over :data:`MAX_YAML_BYTES`, one nested past
    :data:`MAX_YAML_DEPTH` or expanding past :data:`MAX_YAML_NODES` values, or a key given twice
    is a :class:`RecipeError` at ``source:line``.
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_YAML_BYTES:
        raise RecipeError(
            f"the file is {size:,} bytes; a recipe or search spec is at most {MAX_YAML_BYTES:,}",
            where=source,
        )
    try:
        loader = _Loader(text, source)
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _checked_lines(root, source)
        return loader.construct_document(root), lines
    except yaml.reader.ReaderError as exc:  # e.g. a control character
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError(
            f"malformed YAML: character U+{exc.character:04X} is not allowed in YAML",
            where=f"{source}:{line}",
            hint="remove it, or escape it in a double-quoted string",
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"malformed YAML: {problem}", where=where) from exc


def either_text(said: list[str]) -> str:
    """What a union's branches said at one place: "Input should be a valid string, or a valid
    dictionary"."""
    lead = "Input should be " if said[0].startswith("Input should be ") else ""
    return ", or ".join([said[0], *(m.removeprefix(lead) for m in said[1:])])


def exists_at(data: Any, loc: Loc) -> bool:
    """Whether ``loc`` names something in ``data`` (mapping keys compare as text: YAML keys
    such as ``1`` arrive as ints, pydantic's locations as strings)."""
    node = data
    for item in loc:
        in_list = isinstance(node, list) and isinstance(item, int) and item < len(node)
        if in_list or (isinstance(node, dict) and item in node):
            node = node[item]
        elif isinstance(node, dict) and str(item) in {str(k) for k in node}:
            node = next(v for k, v in node.items() if str(k) == str(item))
        else:
            return False
    return True
