"""Where a search's study lives: SQLite or a journal file in its folder, or an RDB URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effkit.pareto.recovery import GRACE_S, HEARTBEAT_S, retry_after_heartbeat


def make_storage(url: str) -> Any:
    """An Optuna storage: ``journal:PATH`` for a journal file, otherwise an RDB URL."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:") :]))
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 120}}  # several local workers wait, not fail
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine,
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=retry_after_heartbeat,
    )


def default_storage(folder: Path, workers: int) -> str:
    """The folder's own storage: SQLite for one worker, a journal file for several."""
    if workers == 1:
        return f"sqlite:///{(folder / 'study.db').resolve()}"
    return f"journal:{(folder / 'journal.log').resolve()}"


def shown(url: str) -> str:
    """A storage URL for messages, without its password."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..." if "://" in url else url


def owned(folder: Path, url: str) -> bool:
    """Whether ``url`` is one of the folder's own storages (so the search owns it)."""
    return url in (default_storage(folder, 1), default_storage(folder, 2))
