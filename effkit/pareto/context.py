"""What every part of a running search shares: its settings, and what it produced."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effkit.pareto.spec import SearchSpec

HOST = socket.gethostname()
"""The machine this process runs on: trials record it, and each machine has its own baseline."""


@dataclass
class Context:
    """Everything a worker needs, picklable so that spawned workers receive it whole."""

    spec: SearchSpec
    overrides: list[str]
    folder: Path
    study_name: str
    storage: str
    trials: int
    workers: int = 1
    progress: bool = True
    owner: bool = True


@dataclass
class SearchResult:
    """What a search produced; ``search_dir`` holds it all on disk."""

    search_dir: Path
    study_name: str
    storage: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    @property
    def retries(self) -> list[str]:
        """One line per trial evaluated again after its process ended, saying why."""
        from effkit.pareto.outputs import retry_notes

        return retry_notes(self.trials)

    @property
    def report(self) -> Path:
        """The search's ``report.md``."""
        return self.search_dir / "report.md"

    @property
    def best_recipe(self) -> Path | None:
        """``best_recipe.yaml``, once a trial meets the target."""
        path = self.search_dir / "best_recipe.yaml"
        return path if path.is_file() else None
