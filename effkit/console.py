"""How the command line talks to its user: the two consoles, the quiet/debug switches, logging.

Results go to standard output (:data:`out`), so that they can be piped; logs, progress and
errors go to standard error (:data:`console`). Every command module prints through these.
"""

from __future__ import annotations

import logging
import os
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
