"""Exceptions a user can cause: each carries one message that says what, where and what instead."""

from __future__ import annotations


class EffkitError(Exception):
    """Base class of every error a user can cause; the CLI prints its message and exits 2."""

    kind = "error"

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class RecipeError(EffkitError):
    """A recipe or search spec that cannot be read or does not validate."""

    kind = "recipe error"


class PluginError(EffkitError):
    """An unknown plugin name, or a plugin that fails to load."""

    kind = "plugin error"


class DataError(EffkitError):
    """A missing file or column, an empty dataset, a label outside the task."""

    kind = "data error"


class ModelError(EffkitError):
    """A model source that cannot be loaded, or a saved model that does not match its format."""

    kind = "model error"


class RunError(EffkitError):
    """A run folder that belongs to another recipe, or a stage that cannot resume."""

    kind = "run error"


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The valid name closest to ``name``, or None when nothing is close."""
    import difflib

    found = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A hint listing the valid names, leading with the closest one."""
    best = closest(name, choices)
    known = ", ".join(sorted(choices)) or "none"
    return f"did you mean '{best}'? known: {known}" if best else f"known: {known}"
