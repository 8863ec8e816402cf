"""A throwaway PostgreSQL server for the tests: initdb into a folder, start it, stop it.

The server listens on a free loopback port (127.0.0.1) and on a unix socket inside the folder,
holds one database (``effkit_test``) and one user (``effkit``, with a random password for TCP
connections), and keeps its data in the folder, which ``stop`` removes. It runs without fsync:
it is for tests only.

``.ci/run`` uses it as a script, and tests/test_search_postgres.py imports it to start its own
server when ``EFFKIT_TEST_POSTGRES_URL`` is unset::

    python tests/postgres_server.py start DIR   # prints postgresql://effkit:PW@127.0.0.1:PORT/...
    python tests/postgres_server.py stop DIR    # stops the server, removes DIR

PostgreSQL refuses to run as root: as root, the server runs as the system's ``postgres`` user
(through ``runuser``) when there is one. The standard library is all this needs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

URL_ENV = "EFFKIT_TEST_POSTGRES_URL"
"""The variable that hands a running server's URL to the tests."""
USER = "effkit"
DATABASE = "effkit_test"
SERVER_USER = "postgres"
"""The account the server runs as when this runs as root."""


class Unavailable(Exception):
    """PostgreSQL cannot run here (not installed, or root with no account to run it as)."""


def bin_dir() -> Path:
    """The folder of PostgreSQL's programs: that of ``initdb`` on PATH, or a Debian install."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = [Path(p).parents[1] for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions = [v for v in versions if v.name.isdigit()]
    if versions:
        return max(versions, key=lambda v: int(v.name)) / "bin"
    raise Unavailable("PostgreSQL is not installed (no initdb on PATH)")


def as_server_user() -> list[str]:
    """The prefix that runs a command as the server's account: none unless this is root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam(SERVER_USER)
    except KeyError:
        runuser = None
    if runuser is None:
        raise Unavailable(
            f"running as root, which PostgreSQL refuses, and no '{SERVER_USER}' account (with "
            "runuser) to run the server as"
        )
    return [runuser, "-u", SERVER_USER, "--"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], folder: Path) -> None:
    proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        log = folder / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(
            f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{tail}"
        )


def start(folder: Path) -> str:
    """Create and start a server with its data in ``folder`` (made if missing); its URL."""
    tools, prefix = bin_dir(), as_server_user()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    password = secrets.token_hex(12)
    pwfile = folder / "password"
    pwfile.write_text(password + "\n", encoding="utf-8")
    if prefix:  # the server's account owns the folder
        import pwd

        account = pwd.getpwnam(SERVER_USER)
        for path in (folder, sockets, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    _run([*prefix, str(tools / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
         folder)  # fmt: skip
    pwfile.unlink()
    for attempt in range(5):  # a port found free may be taken before the server binds it
        port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
        try:
            _run([*prefix, str(tools / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                  "-w", "-t", "60", "-o", options, "start"], folder)  # fmt: skip
            break
        except RuntimeError:
            if attempt == 4:
                raise
    _run([*prefix, str(tools / "createdb"), "-h", str(sockets), "-p", str(port), "-U", USER,
          DATABASE], folder)  # fmt: skip
    url = f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    (folder / "url").write_text(url + "\n", encoding="utf-8")
    return url


def stop(folder: Path) -> None:
    """Stop the server of ``folder`` if it runs, and remove the folder."""
    folder = folder.resolve()
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(Unavailable, RuntimeError, subprocess.TimeoutExpired):
            _run([*as_server_user(), str(bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast",
                  "-w", "-t", "60", "stop"], folder)  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A server in a new temporary folder for the duration of the block; its URL."""
    # under /tmp: a unix socket's path must stay short
    folder = Path(
        tempfile.mkdtemp(prefix="effkit-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    )
    try:
        yield start(folder)
    finally:
        stop(folder)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: postgres_server.py start|stop DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if argv[0] == "stop":
        stop(folder)
        return 0
    try:
        print(start(folder))
    except Unavailable as exc:
        print(f"postgres_server.py: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
