"""effkit's one progress bar: rich, on standard error, transient, and off under ``--quiet``.

Training steps, inference batches and benchmark calls all draw this bar; on a terminal it
shows while work runs and disappears when done, and when standard error is not a terminal (a
log file, CI) nothing is drawn, so logs hold only log lines. The libraries' own bars (datasets,
transformers) are switched off by :func:`effkit.console.setup_logging`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from effkit.console import console, switches

T = TypeVar("T")


_active: list[Any] = []
"""The rich ``Progress`` now on screen; a bar opened while one is drawn joins it as a row."""


class Bar:
    """A progress bar of ``total`` units, or nothing when ``enabled`` is false, ``--quiet`` is
    on, or ``total`` is 0. Use it as a context manager; :meth:`advance` and :meth:`note` are
    no-ops when no bar is drawn. A bar opened while another is drawn (validation inside
    training) is a second row of the same display, removed when it closes."""

    def __init__(
        self, total: int, description: str, *, enabled: bool = True, unit: str = "", start: int = 0
    ) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._owner = False
        self.description = description
        if not enabled or switches.quiet or total <= 0:
            return
        if _active:
            self._progress = _active[-1]
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
                transient=True,
            )
            self._owner = True
        self._task = self._progress.add_task(description, total=total, completed=start,
                                             note="", unit=unit)  # fmt: skip

    @property
    def drawn(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> Bar:
        return self.show()

    def show(self) -> Bar:
        """Put the bar on screen (``with`` does it); :meth:`close` takes it away."""
        if self._owner and self._progress not in _active:
            self._progress.start()
            _active.append(self._progress)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is None:
            return
        if self._owner:
            self._progress.stop()
            if self._progress in _active:
                _active.remove(self._progress)
        else:
            self._progress.remove_task(self._task)
        self._progress = None

    def advance(self, units: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, units)

    def describe(self, text: str) -> None:
        """Replace the label (which model a benchmark is timing)."""
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def note(self, text: str) -> None:
        """A short text after the bar (the running loss)."""
        if self._progress is not None:
            self._progress.update(self._task, note=text)


def track(items: Iterable[T], total: int, description: str | None, unit: str = "") -> Iterator[T]:
    """``items``, drawing a bar labelled ``description`` while they are consumed (no bar when
    ``description`` is None)."""
    with Bar(total, description or "", enabled=description is not None, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance()
