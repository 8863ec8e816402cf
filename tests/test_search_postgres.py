"""A search against a real PostgreSQL database, and the message when a database driver is missing.

The server is the one ``EFFKIT_TEST_POSTGRES_URL`` names (``.ci/run`` starts one), or else one
this module starts in a temporary folder (tests/postgres_server.py) when PostgreSQL is
installed; without either, the database tests are skipped and say why. Each test uses a study
of its own, so they share one database. The search is the tiny one of test_search_recovery.py.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]

import postgres_server  # noqa: E402  (tests/postgres_server.py)
from test_search_recovery import (  # noqa: E402  (the tiny search of the recovery tests)
    distinct_evaluations,
    load,
    retry_of,
    write_spec,
)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL database: the one CI gives, or a server started for this module."""
    given = os.environ.get(postgres_server.URL_ENV)
    if given:
        yield given
        return
    pytest.importorskip(
        "psycopg", reason="psycopg is not installed: pip install 'effkit[postgres]'"
    )
    try:
        postgres_server.bin_dir()
        postgres_server.as_server_user()
    except postgres_server.Unavailable as exc:
        pytest.skip(f"{exc}; or set {postgres_server.URL_ENV} to a database URL")
    with postgres_server.server() as url:
        yield url


def study_name() -> str:
    return f"pg-{uuid.uuid4().hex[:12]}"


def front_numbers(folder: Path) -> set[int]:
    with open(folder / "pareto.csv", encoding="utf-8", newline="") as handle:
        return {int(row["number"]) for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_and_a_killed_one_is_retried(tmp_path, postgres_url):
    from effkit.pareto.workers import KILL_TRIAL_ENV

    folder, name = tmp_path / "out", study_name()
    proc = subprocess.run(
        [sys.executable, "-m", "effkit.cli", "search", str(write_spec(tmp_path / "spec")),
         "--search-dir", str(folder), "--workers", "2", "--storage", postgres_url,
         "--study", name],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "COLUMNS": "300", KILL_TRIAL_ENV: "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(folder)  # read back from the database
    assert study.study_name == name
    trials = study.get_trials(deepcopy=False)
    states = sorted(t.state.name for t in trials)
    # the budget of three distinct evaluations, plus the retry of the killed trial: no more
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states
    killed = trials[0]
    assert "killed by SIGKILL" in killed.user_attrs["interrupted"]
    retry = retry_of(study, 0)
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    keys = distinct_evaluations(study)
    assert len(keys) == 3 and len(set(keys)) == 3  # no recipe evaluated twice
    done = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(set(done)) == 3  # each parameter set once
    assert not [t for t in trials if "duplicate_of" in t.user_attrs]
    # noticed by the driver the moment the worker died, not after a heartbeat grace period
    pid = killed.user_attrs["pid"]
    assert f"(pid {pid}) ended, killed by SIGKILL" in proc.stderr
    assert "starting worker 2 in its place" in proc.stderr
    assert f"trial 0 was retried as trial {retry.number} (COMPLETE)" in proc.stdout
    # effkit's front is Optuna's, read from the same database
    best = {t.number: t.values for t in study.best_trials}
    assert front_numbers(folder) == set(best)
    values = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert {n: values[n] for n in best} == best
    # the password stays out of what the search prints and writes
    password = postgres_url.split("@", 1)[0].rsplit(":", 1)[-1]
    assert password not in proc.stdout + proc.stderr
    assert password not in (folder / "report.md").read_text()


def test_a_bare_postgresql_url_opens_with_psycopg(postgres_url, monkeypatch):
    import optuna
    from sqlalchemy.dialects.postgresql import base, psycopg2

    from effkit.pareto.storage import make_storage, rdb_url

    pytest.importorskip("psycopg")
    storage = make_storage(postgres_url)
    name = study_name()
    optuna.create_study(study_name=name, storage=storage)
    assert name in [s.study_name for s in optuna.get_all_study_summaries(storage)]
    # where SQLAlchemy's default driver is psycopg2 (before 2.1) and only psycopg 3 is installed
    monkeypatch.setattr(base, "dialect", psycopg2.dialect)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    bare = "postgresql://u:p@db:5432/effkit"
    assert rdb_url(bare) == "postgresql+psycopg://u:p@db:5432/effkit"
    assert rdb_url("postgresql+psycopg://u:p@db/effkit") == "postgresql+psycopg://u:p@db/effkit"


def _no_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("psycopg", "psycopg2", "pymysql", "MySQLdb"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@db/effkit", "needs a PostgreSQL driver"),
        ("postgresql+psycopg://u:secret@db/effkit", "PostgreSQL driver 'psycopg'"),
        ("mysql://u:secret@db/effkit", "needs a MySQL driver"),
        ("mysql+pymysql://u:secret@db/effkit", "MySQL driver 'pymysql'"),
    ],
)
def test_a_missing_driver_names_the_extra_and_exits_2(tmp_path, monkeypatch, capsys, url, expected):
    from effkit.cli import main

    _no_drivers(monkeypatch)
    monkeypatch.setenv("COLUMNS", "300")
    folder = tmp_path / "out"
    argv = ["search", str(write_spec(tmp_path / "spec")), "--search-dir", str(folder),
            "--storage", url]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    said: Any = capsys.readouterr()
    message = " ".join((said.out + said.err).split())
    extra = "postgres" if url.startswith("postgresql") else "mysql"
    assert expected in message and f"pip install 'effkit[{extra}]'" in message, message
    assert "secret" not in message and "Traceback" not in message
    assert not folder.exists()  # stopped before anything was written
