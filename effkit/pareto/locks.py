"""File locks that keep the processes of one search from spoiling each other's work.

Throughput is only worth comparing when it is measured on an otherwise idle machine, so a
measurement must wait until no other process of the search is training or evaluating, and
nothing new may start while it runs. That is a readers-writer lock over ``flock``: training
and evaluation hold ``work.lock`` shared, a measurement holds it exclusively. A measurement
first takes ``gate.lock`` exclusively, and work passes through the gate (shared, for a moment)
before it takes its shared lock, so a waiting measurement is not starved by a stream of new
stages. The lock is per stage, not per trial, so a measurement waits at most for the stages
that are running when it asks.

Named locks (one per stage key) let a second process that reaches a stage another one is
training wait for it and take the result from the stage cache, rather than train it again.

``flock`` locks belong to open files and are released by the kernel when a process dies, so a
killed worker never leaves a lock behind. They are local to one machine (workers on several
machines each measure on their own machine, which is what the figures are about).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from effkit.errors import RunError


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        fcntl.flock(handle.fileno(), mode)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class SearchLocks:
    """The locks of one search folder (``<search dir>/locks``), as seen by one process."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder) / "locks"
        self._work_depth = 0
        self._work_handle: IO[bytes] | None = None

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        """Hold while training or evaluating: measurements wait until it is released.

        Re-entrant within a process, so that nested work never waits on the gate behind a
        measurement that is itself waiting for this process.
        """
        if self._work_depth == 0:
            with _flock(self.folder / "gate.lock", fcntl.LOCK_SH):
                handle = open(self.folder / "work.lock", "ab")  # noqa: SIM115 - held across yield
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            self._work_handle = handle
        self._work_depth += 1
        try:
            yield
        finally:
            self._work_depth -= 1
            if self._work_depth == 0 and self._work_handle is not None:
                fcntl.flock(self._work_handle.fileno(), fcntl.LOCK_UN)
                self._work_handle.close()
                self._work_handle = None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Hold while measuring throughput: no other work of the search runs meanwhile."""
        if self._work_depth:
            raise RuntimeError("a process cannot measure while it holds the work lock")
        with (
            _flock(self.folder / "gate.lock", fcntl.LOCK_EX),
            _flock(self.folder / "work.lock", fcntl.LOCK_EX),
        ):
            yield

    def stage(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Held while the stage with cache key ``key`` is produced (see ``exclusive``)."""
        return self.exclusive(f"stage-{key}")

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A named mutex: ``stage-KEY`` while a stage is produced, ``dedupe`` while a trial
        claims its recipe, so that no two processes train one stage or run one recipe."""
        with _flock(self.folder / f"{name}.lock", fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def owner(self) -> Iterator[None]:
        """Hold for a whole search that owns its storage; a second one in the folder is refused.

        Owning the storage is what allows marking every RUNNING trial found at start as failed:
        nothing else can be running it.
        """
        path = self.folder / "search.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(
                    f"another search is running in '{self.folder.parent}'",
                    hint="wait for it, add workers with --workers, or share an RDB --storage",
                ) from None
            try:
                handle.truncate(0)
                handle.write(str(os.getpid()).encode())
                handle.flush()
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
