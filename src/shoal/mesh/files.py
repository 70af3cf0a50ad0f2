"""The mesh's small state files under `<home>/mesh/`, shared safely by the server and the CLI.

A running node and CLI commands on the same home both read and write these files, so every
change happens under one lock (a file lock across processes plus a thread lock inside one)
and lands with an atomic replace. Readers cache a file's content until its modification time
size or inode changes, which makes a change by another process visible at the next read.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shoal.durable import atomic_write
from shoal.errors import ShoalError

__all__ = ["JsonFile", "mesh_lock"]

_THREAD_LOCK = threading.RLock()


@contextmanager
def mesh_lock(home_root: Path) -> Iterator[None]:
    """Hold the home's mesh lock: one writer of mesh files at a time, across processes."""
    locks = home_root / "locks"
    locks.mkdir(exist_ok=True)
    with _THREAD_LOCK:
        fd = os.open(locks / "mesh.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class JsonFile:
    """One JSON state file, re-read only when it changed on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._data: Any = None
        self.generation = 0  # counts reloads, so callers can cache what they derive

    def exists(self) -> bool:
        return self.path.exists()

    def read(self, default: Any = None) -> Any:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return default
        # Every write is a rename of a new file, so the inode tells changes apart even when
        # two land within one tick of the file system's clock.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                self._data = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ShoalError(
                    f"mesh state file {self.path} is unreadable: {exc}",
                    hint="restore it from a backup, or leave and join the mesh again",
                ) from exc
            self._stamp = stamp
            self.generation += 1
        return self._data

    def write(self, data: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(self.path, payload)
        self._stamp = None
