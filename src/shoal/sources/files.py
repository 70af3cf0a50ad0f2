"""Helpers the file-based source kinds share: finding the file, naming it safely."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.errors import SourceError

__all__ = ["describe_path", "existing_file", "sql_string"]


def existing_file(spec: str) -> Path:
    """Give the path of a readable regular file, or a SourceError saying what is wrong."""
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{describe_path(path)} does not exist")
    if not path.is_file():
        raise SourceError(f"{describe_path(path)} is not a file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{describe_path(path)} is not readable")
    return path


def describe_path(path: Path) -> str:
    """Name a path for messages; undecodable bytes in names are shown escaped, not crashed on."""
    # A name with bytes that are not valid UTF-8 holds surrogates after fsdecode; printing
    # them would raise, so they are shown as escapes.
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def sql_string(text: str) -> str:
    """Quote `text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
