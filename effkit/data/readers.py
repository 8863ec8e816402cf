"""Reading plain files effkit understands itself: CoNLL columns and one text per line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.errors import DataError

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def read_text(path: Path) -> str:
    """A text file's contents: UTF-8, falling back to Windows-1252 and Latin-1 for old files."""
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_conll(path: str | Path) -> list[dict[str, Any]]:
    """Sentences of a CoNLL-style file as ``{"tokens": [...], "tags": [...]}`` (tags as strings).

    One token per line, token in the first and tag in the last column (tab- or
    whitespace-separated); a blank line ends a sentence; ``-DOCSTART-`` lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", where=str(path))
    sentences: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    for number, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped.startswith("-DOCSTART-"):
            flush()
            continue
        parts = stripped.split("\t") if "\t" in stripped else stripped.split()
        parts = [p.strip() for p in parts]
        if len(parts) < 2 or not parts[0] or not parts[-1]:
            raise DataError(
                f"line {number} has no tag: {stripped[:60]!r}",
                where=str(path),
                hint="CoNLL lines hold a token and its tag separated by a tab or spaces",
            )
        tokens.append(parts[0])
        tags.append(parts[-1])
    flush()
    if not sentences:
        raise DataError("the file holds no sentences", where=str(path))
    return sentences


def read_text_file(path: str | Path) -> list[str]:
    """Documents of a text file, one per non-empty line (surrounding whitespace stripped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("no such file", where=str(path))
    lines = [line.strip() for line in read_text(path).splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise DataError("the file holds no text", where=str(path), hint="one document per line")
    return texts
