"""How the command line talks to its user: the two consoles, the quiet/debug switches, logging.

Results go to standard output (:data:`out`), so that they can be piped; logs, progress and
errors go to standard error (:data:`console`). Every command module prints through these.

In a run of several processes only the first prints results, progress and logs; the others
print errors only (:func:`quiet_other_ranks`).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

from rich.console import Console

console = Console(stderr=True)
"""Logs, progress and error messages (standard error)."""
out = Console()
"""Results: tables, JSON lines, the report path (standard output)."""


@dataclass
class Switches:
    """The command line's global options, set before a command runs."""

    debug: bool = False
    """Show tracebacks of errors."""
    quiet: bool = False
    """Only warnings and errors; no progress."""


switches = Switches()


_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")


def launched_rank() -> int:
    """This process's rank as its launcher set it (torchrun, accelerate, MPI); 0 otherwise."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def quiet_other_ranks(rank: int | None = None) -> None:
    """In any process but the first (``rank``, default the launcher's): no results on standard
    output, and logs and Python warnings only from errors up."""
    rank = launched_rank() if rank is None else rank
    if rank == 0:
        return
    out.quiet = True
    root = logging.getLogger()
    root.setLevel(max(root.level, logging.ERROR))
    for handler in root.handlers:  # loggers with a level of their own reach these too
        handler.setLevel(max(handler.level, logging.ERROR))
    warnings.filterwarnings("ignore")


def setup_logging(level: int) -> None:
    """Log through rich on standard error; quiet the libraries that talk on their own."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "accelerate", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    quiet_other_ranks()
