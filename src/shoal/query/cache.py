"""An exact cache of fragment results.

A fragment reads one product at one Delta table version, and versions never change, so the
same fragment text over the same version always gives the same rows. The key is therefore
(fragment SQL, owner, product, version, caller); a new version is a different key, so the
cache is never stale and never needs invalidating. Fragments without a known version are
not cached. The caller is part of the key so that, once policies give callers different
views, one caller's rows are never served to another.

The coordinator also keeps whole answers (`ResultKey`) in the same cache: the statement's
text with the state that decides its plan (the catalog file and this node's own product
versions). A repeated dashboard query then skips planning and merging too. Statements that
call volatile functions (random(), now()) are never cached, at either level.

Bounded by the bytes of the cached Arrow tables; the least recently used go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import pyarrow as pa

from shoal.query.plan import Fragment

__all__ = ["CacheKey", "FragmentCache", "ResultKey", "fragment_key"]


@dataclass(frozen=True)
class CacheKey:
    sql: str
    owner: str
    product: str
    version: int
    caller: str


@dataclass(frozen=True)
class ResultKey:
    """A whole statement's answer at a coordinator: the same text over the same catalog and
    the same own product versions is planned the same way and reads the same versions."""

    sql: str
    caller: str
    state: tuple[object, ...]


def fragment_key(fragment: Fragment, caller: str | None) -> CacheKey | None:
    """The fragment's cache key, or None when its result cannot be cached exactly."""
    if fragment.version is None or fragment.volatile:
        return None
    if any(version is None for _, version in fragment.also):
        return None
    # A fragment's inputs are part of what it reads: its text names them by id only.
    inputs = [fragment_key(shipped, caller) for shipped in fragment.inputs]
    if any(key is None for key in inputs):
        return None
    sql = "\n".join([fragment.sql, *(repr(key) for key in inputs)])
    product = ",".join([fragment.product, *(f"{n}@{v}" for n, v in fragment.also)])
    return CacheKey(sql, fragment.owner, product, fragment.version, caller or "")


class FragmentCache:
    """A thread-safe LRU of Arrow tables, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[CacheKey | ResultKey, pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey | ResultKey) -> pa.Table | None:
        with self._lock:
            table = self._tables.get(key)
            if table is None:
                self.misses += 1
                return None
            self._tables.move_to_end(key)
            self.hits += 1
            return table

    def put(self, key: CacheKey | ResultKey, table: pa.Table) -> None:
        """Keep `table` unless it alone would take more than a quarter of the cache."""
        size = table.nbytes
        if self.max_bytes <= 0 or size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._tables.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._tables[key] = table
            self._bytes += size
            while self._bytes > self.max_bytes and self._tables:
                _, evicted = self._tables.popitem(last=False)
                self._bytes -= evicted.nbytes

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._tables)
