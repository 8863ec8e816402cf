"""Where a search's study lives: SQLite or a journal file in its folder, or an RDB URL.

An RDB URL goes to SQLAlchemy through :func:`rdb_url`, which checks that its database driver is
installed: a URL without a ``+driver`` (``postgresql://``, ``mysql://``) means SQLAlchemy's
default driver for that database, and when that one is missing but the driver of effkit's extra
is installed (psycopg 3 for ``postgres``, PyMySQL for ``mysql``), the URL is given that driver.
A URL that names its driver is left as it is. With no driver, the search stops before it starts,
naming the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effkit.errors import RunError
from effkit.pareto.recovery import GRACE_S, HEARTBEAT_S, retry_after_heartbeat

DRIVERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "postgresql": ("PostgreSQL", "postgres", ("psycopg", "psycopg2")),
    "mysql": ("MySQL", "mysql", ("pymysql", "mysqldb")),
    "mariadb": ("MariaDB", "mysql", ("pymysql", "mysqldb")),
}
"""For each database: its name, effkit's extra that installs a driver for it, and the SQLAlchemy
drivers a URL without ``+driver`` may use, in order of preference (the extra's first)."""


def _installed(dialect: Any) -> bool:
    """Whether the driver module of a SQLAlchemy dialect class imports."""
    try:
        dialect.import_dbapi()
    except ImportError:
        return False
    return True


def rdb_url(url: str) -> str:
    """The URL to open: ``url``, or a bare one given an installed driver; a RunError (exit
    code 2) naming the extra to install when the driver it needs is missing.

    A URL SQLAlchemy cannot read is returned as it is: opening it says what is wrong.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if _installed(parsed.get_dialect()):
            return url
    except Exception:  # not a URL, an unknown database
        return url
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in DRIVERS:
        raise RunError(
            f"the storage {shown(url)} needs the database driver '{driver}', "
            "which is not installed",
            hint="install it, or use postgresql://, mysql+pymysql:// or sqlite:///",
        )
    name, extra, candidates = DRIVERS[backend]
    install = f"pip install 'effkit[{extra}]'"
    if "+" in parsed.drivername:  # a driver the URL chose: it is not replaced
        if driver != candidates[0]:
            install = f"install {driver}, or {install} and write {backend}+{candidates[0]}://"
        raise RunError(
            f"the storage {shown(url)} needs the {name} driver '{driver}', which is not installed",
            hint=install,
        )
    for candidate in candidates:
        if _installed(parsed.set(drivername=f"{backend}+{candidate}").get_dialect()):
            return f"{backend}+{candidate}://{url.split('://', 1)[1]}"
    raise RunError(
        f"the storage {shown(url)} needs a {name} driver "
        f"({' or '.join(dict.fromkeys((driver, *candidates)))}), and none is installed",
        hint=install,
    )


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
        rdb_url(url),
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
