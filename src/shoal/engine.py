"""DuckDB sessions: the only place Shoal creates them, so the lock-down cannot be forgotten.

Two kinds:

* `LockedSession` runs user SQL. Before any user SQL runs, the session has no file or
  network access, cannot install or load extensions, does not look up Python variables by
  name, and its configuration is locked. On top of DuckDB's own guards, a statement gate lets
  exactly one read-only statement (SELECT or EXPLAIN) through.
* `trusted_connection()` serves Shoal's own code (reading sources, checking contracts); it
  never sees user SQL.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from shoal.errors import LockdownError, NotFoundError, ShoalError, UsageError

__all__ = ["LockedSession", "quote_identifier", "read_only_statement", "trusted_connection"]

log = logging.getLogger("shoal.engine")

_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def quote_identifier(name: str) -> str:
    """Quote `name` as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def read_only_statement(sql: str) -> str:
    """Give `sql` back if it is exactly one SELECT or EXPLAIN; LockdownError otherwise.

    DuckDB's own parser decides, so the federated planner refuses exactly what local SQL
    refuses, before any other parser looks at the text.
    """
    return LockedSession._gate(sql)


def trusted_connection(*, threads: int = 0, memory_limit: str | None = None) -> Any:
    """Open an in-memory DuckDB connection for Shoal's own queries (never user SQL).

    External access stays on (readers need files), but extensions are never fetched and
    Python variables are never scanned implicitly.
    """
    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "python_enable_replacements": False,
    }
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    return duckdb.connect(":memory:", config=config)


class LockedSession:
    """A DuckDB session that runs one untrusted, read-only statement at a time.

    Opening a DuckDB database costs about 20 ms, more than a small query, so sessions share
    one locked-down in-memory database per (memory_limit, threads) and each gets its own
    connection to it (a cursor, microseconds). A session's tables live in a catalog of its
    own (an attached in-memory database it `USE`s) as views over Arrow objects registered
    on its connection only: another session resolves those names to its own registrations,
    so no session can read another's data. The shared database's configuration is locked
    before any session exists, and the memory limit bounds all sessions together.
    """

    def __init__(self, *, memory_limit: str = "2GB", threads: int = 0) -> None:
        root = _shared_database(memory_limit, threads)
        with _ROOTS_LOCK:
            self._con: Any = root.cursor()
            self._catalog = f"__shoal_session_{next(_SESSION_NUMBERS)}"
        self._con.execute(f"ATTACH ':memory:' AS {quote_identifier(self._catalog)}")
        self._con.execute(f"USE {quote_identifier(self._catalog)}")
        self._locked = False
        # Detach the session's catalog when the session (and every reader it gave out,
        # which keeps it alive) is gone, even if nobody called close().
        self._release = weakref.finalize(self, _release, self._con, self._catalog)

    def expose(self, tables: Mapping[tuple[str, str], Any], *, aliases: bool = True) -> None:
        """Make Arrow tables or datasets visible as `schema.name` (and plain `name`).

        `tables` maps (schema, name) to an Arrow object. Plain names are created for names
        that are unique across schemas when `aliases` is on. Must be called before `lock()`.
        """
        if self._locked:
            raise ShoalError("cannot expose tables after the session is locked")
        counts: dict[str, int] = {}
        for _, name in tables:
            counts[name] = counts.get(name, 0) + 1
        for index, ((schema, name), data) in enumerate(tables.items()):
            hidden = f"__shoal_source_{index}"
            self._con.register(hidden, data)
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
            target = f"{quote_identifier(schema)}.{quote_identifier(name)}"
            self._con.execute(f"CREATE VIEW {target} AS SELECT * FROM {hidden}")
            if aliases and counts[name] == 1 and schema != "main":
                self._con.execute(
                    f"CREATE VIEW main.{quote_identifier(name)} AS SELECT * FROM {hidden}"
                )

    def lock(self) -> None:
        """From here on only the statement gate decides (the configuration is locked
        already, for every session)."""
        self._locked = True

    def run(self, sql: str) -> pa.RecordBatchReader:
        """Run one read-only statement and stream its result as Arrow batches."""
        with _sql_errors():
            relation = self._relation(sql)
            reader = relation.to_arrow_reader(65_536)
        return pa.RecordBatchReader.from_batches(reader.schema, self._kept_open(reader))

    def _kept_open(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        # The reader reads views of this session's catalog: holding `self` here keeps the
        # catalog attached until the last batch was read or the reader is dropped.
        with _sql_errors():
            yield from reader

    def columns(self, sql: str) -> list[str]:
        """Bind one read-only statement without running it; give its column names."""
        with _sql_errors():
            return list(self._relation(sql).columns)

    def _relation(self, sql: str) -> Any:
        if not self._locked:
            self.lock()
        statement = self._gate(sql)
        relation = self._con.sql(statement)
        if relation is None:
            raise LockdownError("only statements that return rows are allowed")
        return relation

    def close(self) -> None:
        self._release()

    def __enter__(self) -> LockedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _gate(sql: str) -> str:
        """Let exactly one SELECT or EXPLAIN through; refuse everything else."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise UsageError(f"SQL error: {_duck_message(exc)}") from exc
        if len(statements) != 1:
            raise LockdownError(
                f"exactly one SQL statement per call is allowed; got {len(statements)}"
            )
        statement = statements[0]
        if statement.type not in _ALLOWED_STATEMENTS:
            kind = statement.type.name
            raise LockdownError(
                f"{kind} statements are not allowed; only one read-only SELECT per call"
            )
        return str(statement.query)


_ROOTS: dict[tuple[str, int], Any] = {}
_ROOTS_LOCK = threading.Lock()
_SESSION_NUMBERS = itertools.count()


def _shared_database(memory_limit: str, threads: int) -> Any:
    """The locked-down database sessions with these limits connect to (made once)."""
    key = (memory_limit, threads)
    with _ROOTS_LOCK:
        root = _ROOTS.get(key)
        if root is None:
            config: dict[str, Any] = {
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_unsigned_extensions": False,
                "python_enable_replacements": False,
                "memory_limit": memory_limit,
            }
            if threads:
                config["threads"] = threads
            root = duckdb.connect(":memory:", config=config)
            root.execute("SET lock_configuration = true")
            _ROOTS[key] = root
        return root


def _release(con: Any, catalog: str) -> None:
    """Drop a session's catalog and close its connection."""
    try:
        con.execute("USE memory")
        con.execute(f"DETACH {quote_identifier(catalog)}")
    except duckdb.Error as exc:  # a closed or broken connection: nothing left to free
        log.debug("releasing %s: %s", catalog, exc)
    finally:
        con.close()


@contextmanager
def _sql_errors() -> Iterator[None]:
    """DuckDB's errors as Shoal's, with DuckDB's own message."""
    try:
        yield
    except duckdb.PermissionException as exc:
        raise LockdownError(f"refused by the SQL sandbox: {_duck_message(exc)}") from exc
    except duckdb.CatalogException as exc:
        raise NotFoundError(_duck_message(exc)) from exc
    except (duckdb.ParserException, duckdb.BinderException) as exc:
        raise UsageError(f"SQL error: {_duck_message(exc)}") from exc
    except duckdb.OutOfMemoryException as exc:
        raise ShoalError(
            f"the query needs more memory than allowed: {_duck_message(exc)}",
            hint="raise sql_memory_limit in settings.yaml or make the query smaller",
        ) from exc
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {_duck_message(exc)}") from exc


def _duck_message(exc: Exception) -> str:
    text = str(exc).strip()
    for prefix in (
        "Permission Error: ",
        "Catalog Error: ",
        "Parser Error: ",
        "Binder Error: ",
        "Conversion Error: ",
        "Invalid Input Error: ",
    ):
        text = text.replace(prefix, "")
    return text.splitlines()[0] if text else type(exc).__name__
