"""Helpers the file-based source kinds share: finding the file, naming it safely."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.errors import SourceError

__all__ = [
    "EXACT_TYPES_UP_TO",
    "describe_path",
    "existing_file",
    "non_empty_file",
    "scratch_folder",
    "sql_string",
    "utf8_named",
]

# Text sources (CSV, JSON) up to this size are typed from every row: about three times
# slower than DuckDB's sample of rows, which at this size costs well under a second and
# makes the types deterministic. Bigger files are typed from the sample; a late value that
# does not fit raises TypeDriftError and a publish reads again with exact types.
EXACT_TYPES_UP_TO = 64 * 1024 * 1024


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


def non_empty_file(spec: str) -> tuple[Path, str]:
    """Give a readable, non-empty file and its name for messages, or a SourceError."""
    path = existing_file(spec)
    shown = describe_path(path)
    if path.stat().st_size == 0:
        raise SourceError(f"{shown} is empty")
    return path, shown


def describe_path(path: Path) -> str:
    """Name a path for messages; undecodable bytes in names are shown escaped, not crashed on."""
    # A name with bytes that are not valid UTF-8 holds surrogates after fsdecode; printing
    # them would raise, so those bytes are shown as escapes (caf\xe9.csv).
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def sql_string(text: str) -> str:
    """Quote `text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def scratch_folder(parent: Path | None, prefix: str) -> Iterator[Path]:
    """Give a new scratch folder in `parent` (else the system's), deleted on exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def utf8_named(path: Path, scratch_dir: Path | None) -> Iterator[Path]:
    """Give a path to the same file that readers can open (DuckDB, pyarrow and calamine
    need names that are valid UTF-8).

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
    with scratch_folder(scratch_dir, "name-") as scratch:
        link = scratch / f"source{path.suffix.encode('ascii', 'ignore').decode()}"
        link.symlink_to(path.resolve())
        yield link
