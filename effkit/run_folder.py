"""What runs share and guard: a run folder's owner and lock, the stage cache, stage guards.

One ``effkit apply`` works in a folder at a time. The run holds an exclusive lock on
``RUN_DIR/.lock`` (an OS file lock, released by the kernel however the process ends) and writes
its process id, host and command into that file; a second run exits at once naming the holder.
A lock file left by a process that died holds no lock, so the next run takes it over.

Completed stages are kept in a cache shared by all runs (:func:`cache_root`); runs that share
it concurrently (a search's workers) coordinate through a :class:`StageGuard`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from effkit.errors import RunError
from effkit.storage import read_json, stable_hash

log = logging.getLogger(__name__)

LOCK = ".lock"


def folder_fingerprint(source: str) -> str | None:
    """What identifies a local model folder's contents (configs, and weight sizes and times)."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    facts = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            facts.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
        elif path.is_file():
            stat = path.stat()
            facts.append((path.name, f"{stat.st_size}:{stat.st_mtime_ns}"))
    return stable_hash(facts)


def cache_root() -> Path:
    """The stage cache shared by all runs on this machine."""
    return Path(os.environ.get("EFFKIT_CACHE", Path.home() / ".cache" / "effkit"))


class StageGuard(Protocol):
    """What a run holds while it produces a stage, for runs that share one stage cache.

    ``stage(key)`` is held while the stage with that cache key is produced, so that a second
    run reaching the same stage waits and then takes it from the cache; ``work()`` is held
    while training or evaluating (a search measures throughput only when nothing holds it).
    """

    def stage(self, key: str) -> contextlib.AbstractContextManager[None]: ...

    def work(self) -> contextlib.AbstractContextManager[None]: ...


class NoGuard:
    """A run on its own: nothing to wait for."""

    @contextlib.contextmanager
    def stage(self, key: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        yield


def read_manifest(run_dir: Path, recipe: str) -> dict[str, Any]:
    """The manifest of ``run_dir`` (empty for a new folder); an error when the folder is not
    this recipe's: a file, another recipe's run, a folder of other things, a damaged manifest."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run folder '{run_dir}' is a file", hint="choose another --run-dir")
    path = run_dir / "manifest.json"
    if not path.exists():
        if run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
            raise RunError(
                f"run folder '{run_dir}' is not empty and holds no effkit manifest",
                hint="choose another --run-dir",
            )
        return {}
    try:
        manifest = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(
            f"the manifest '{path}' is damaged ({exc})",
            hint="delete it to check every stage again (finished stages are found by their "
            "stage.json), or choose another --run-dir",
        ) from None
    if not isinstance(manifest, dict):
        raise RunError(f"'{path}' is not an effkit manifest", hint="choose another --run-dir")
    if manifest.get("recipe") != recipe:
        raise RunError(
            f"run folder '{run_dir}' belongs to recipe '{manifest.get('recipe')}', not '{recipe}'",
            hint="choose another --run-dir, or delete that folder",
        )
    return manifest


def _holder(path: Path) -> str:
    try:
        facts = read_json(path)
    except (OSError, ValueError):
        return "another process"
    if not isinstance(facts, dict):
        return "another process"
    return (f"process {facts.get('pid')} on {facts.get('host')} ({facts.get('command')}, "
            f"since {facts.get('started')})")  # fmt: skip


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold its lock while the block runs; a RunError naming
    the holder when another process holds it."""
    import json

    try:
        import fcntl
    except ImportError:  # no POSIX file locks (Windows): runs are not guarded
        run_dir.mkdir(parents=True, exist_ok=True)
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunError(
                f"run folder '{run_dir}' is in use by {_holder(path)}",
                hint="wait for that run to end, or choose another --run-dir",
            ) from None
        previous = os.read(fd, 4096)
        if previous.strip():
            log.info("run folder '%s': taking over the lock of a run that ended", run_dir)
        facts = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(facts).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
