"""Helpers the file-based source kinds share: finding the file, naming it safely."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.errors import SourceError

__all__ = ["describe_path", "existing_file", "sql_string", "utf8_named"]


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


@contextmanager
def utf8_named(path: Path, scratch_dir: Path | None) -> Iterator[Path]:
    """Give a path to the same file whose name DuckDB can take (it needs UTF-8 names).

    A name with bytes that are not UTF-8 (common on USB sticks from old tills) is reached
    through a symlink with a plain name in a scratch folder.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    scratch = Path(tempfile.mkdtemp(prefix="name-", dir=scratch_dir))
    try:
        link = scratch / f"source{path.suffix.encode('ascii', 'ignore').decode()}"
        link.symlink_to(path.resolve())
        yield link
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
