"""DuckDB sessions: the only place Shoal creates them, so the lock-down cannot be forgotten.

Two kinds:

* `LockedSession` runs user SQL. Before any user SQL runs, the session has no file or
  network access, cannot install or load extensions, does not look up Python variables by
  name, and its configuration is locked. On top of DuckDB's own guards, a statement gate lets
  exactly one read-only statement (a SELECT, or an EXPLAIN of one) through, and runs it in a
  read-only transaction, so nothing that slips past the gate can write to any catalog.
* `trusted_connection()` serves Shoal's own code (reading sources, checking contracts); it
  never sees user SQL.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from shoal.errors import LockdownError, NotFoundError, ShoalError, UsageError

__all__ = ["LockedSession", "quote_identifier", "read_only_statement", "trusted_connection"]

log = logging.getLogger("shoal.engine")

_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# Above what a statement written by hand or rewritten from the servers' 1 MiB requests can
# reach; longer text only costs parsing time.
MAX_STATEMENT_CHARS = 4 * 1024 * 1024


def quote_identifier(name: str) -> str:
    """Quote `name` as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def read_only_statement(sql: str) -> str:
    """Give `sql` back if it is exactly one SELECT or an EXPLAIN of one; LockdownError
    otherwise.

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
        self._visible: set[tuple[str, str]] = set()
        # Every statement may name only the tables this session was given. Sessions share
        # one database: a statement that could name another session's catalog, list the
        # catalogs, or name the table behind a policy view would read what it must not.
        self._guarded = True
        self._reading = False  # a read-only transaction is open on the connection
        # Detach the session's catalog when the session (and every reader it gave out,
        # which keeps it alive) is gone, even if nobody called close().
        self._release = weakref.finalize(self, _release, self._con, self._catalog)

    def expose(
        self,
        tables: Mapping[tuple[str, str], Any],
        *,
        aliases: bool = True,
        views: Mapping[tuple[str, str], Callable[[str], str]] | None = None,
    ) -> None:
        """Make Arrow tables or datasets visible as `schema.name` (and plain `name`).

        `tables` maps (schema, name) to an Arrow object. Plain names are created for names
        that are unique across schemas when `aliases` is on. `views` gives, for some of
        them, the SELECT (over the quoted source name it is given) that the name shows
        instead of the whole table (a policy view); statements may then name nothing but
        the exposed names. Must be called before `lock()`.
        """
        if self._locked:
            raise ShoalError("cannot expose tables after the session is locked")
        counts: dict[str, int] = {}
        for _, name in tables:
            counts[name] = counts.get(name, 0) + 1
        shapes = views or {}
        for index, ((schema, name), data) in enumerate(tables.items()):
            if schema == "main" and (schema, name) not in shapes:
                # A plain table in `main` (a fragment's result at the coordinator) is
                # registered under its own name: a view of the connection's own, as the
                # hidden sources are, without the two statements a view in the catalog
                # costs (a third of a millisecond each; a merge exposes one per fragment).
                self._con.register(name, data)
                self._visible.update({("main", name.lower()), ("", name.lower())})
                continue
            hidden = f"__shoal_source_{index}"
            self._con.register(hidden, data)
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
            target = f"{quote_identifier(schema)}.{quote_identifier(name)}"
            shape = shapes.get((schema, name))
            body = shape(hidden) if shape is not None else f"SELECT * FROM {hidden}"
            self._con.execute(f"CREATE VIEW {target} AS {body}")
            self._visible.add((schema.lower(), name.lower()))
            if aliases and counts[name] == 1 and schema != "main":
                self._con.execute(f"CREATE VIEW main.{quote_identifier(name)} AS {body}")
                self._visible.add(("", name.lower()))
            if schema == "main":
                self._visible.add(("", name.lower()))

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
        self._read_only_transaction()
        # Binding comes first (it reads nothing), so DuckDB's own refusals and unknown
        # names keep their errors; what it bound is then checked before anything runs.
        relation = self._con.sql(statement)
        if relation is None:
            raise LockdownError("only statements that return rows are allowed")
        if self._guarded:
            _check_references(statement, self._visible)
        return relation

    def _read_only_transaction(self) -> None:
        """Start a fresh read-only transaction for the next statement: the second wall
        behind the gate (the connection runs one statement at a time anyway, so ending the
        previous one takes nothing from a reader still in use)."""
        if self._reading:
            _end_transaction(self._con)
        self._con.execute("BEGIN TRANSACTION READ ONLY")
        self._reading = True

    def close(self) -> None:
        self._release()

    def __enter__(self) -> LockedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _gate(sql: str) -> str:
        """Let exactly one SELECT, or an EXPLAIN of one, through; refuse everything else."""
        if not isinstance(sql, str):
            raise UsageError("the SQL statement must be text")
        try:
            sql.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from undecodable argv bytes
            raise UsageError("the SQL statement is not valid Unicode text") from exc
        if len(sql) > MAX_STATEMENT_CHARS:
            raise UsageError(
                f"the SQL statement is longer than {MAX_STATEMENT_CHARS // (1024 * 1024)} MiB"
            )
        kind, text = _one_statement(sql)
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs the statement it explains, whatever its kind.
            _one_statement(_explained(text), explained=True)
        return text


# Table functions a statement may call: they make rows or show the (locked) settings, and
# read no session's data.
_ROW_MAKERS = {"range", "generate_series", "unnest", "duckdb_settings"}


def _check_references(sql: str, visible: set[tuple[str, str]]) -> None:
    """Refuse a statement that names a table or table function it was not given (parsing
    costs milliseconds, so statements already found to name only these tables are kept)."""
    key = (sql, frozenset(visible))
    if key in _CHECKED:
        return
    _check_references_parsed(sql, visible)
    with _ROOTS_LOCK:
        if len(_CHECKED) >= 4096:
            _CHECKED.clear()
        _CHECKED.add(key)


_CHECKED: set[tuple[str, frozenset[tuple[str, str]]]] = set()


def _check_references_parsed(sql: str, visible: set[tuple[str, str]]) -> None:
    """Refuse a statement that names a table or table function it was not given.

    Behind a policy view lies the whole table under a name of its own; a statement that
    could name it (or list the catalog to find it) would see what the view hides.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except (sqlglot.errors.SqlglotError, RecursionError) as exc:  # deep nesting recurses
        raise LockdownError(f"this statement cannot be checked against your access: {exc}") from exc
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Func):
            function = (
                table.this.sql_name().lower()
                if not isinstance(table.this, exp.Anonymous)
                else str(table.this.this).lower()
            )
            if function in _ROW_MAKERS:
                continue
            raise LockdownError(f"table function {function}() is not allowed here")
        name, schema = table.name.lower(), table.db.lower()
        if table.catalog:
            raise LockdownError(f"naming a catalog ({table.catalog}) is not allowed here")
        if (schema, name) in visible or (not schema and name in ctes):
            continue
        raise NotFoundError(
            f"no table {'.'.join(p for p in (schema, name) if p)} here",
            hint="`shoal products --mesh` lists what you can query",
        )


def _one_statement(sql: str, *, explained: bool = False) -> tuple[Any, str]:
    """The kind and text of the one SELECT or EXPLAIN in `sql` (only a SELECT when
    `explained`); LockdownError for anything else."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {_duck_message(exc)}") from exc
    allowed = {duckdb.StatementType.SELECT} if explained else _ALLOWED_STATEMENTS
    if len(statements) != 1:
        where = "EXPLAIN is allowed for one SELECT only; " if explained else ""
        raise LockdownError(
            f"{where}exactly one SQL statement per call is allowed; got {len(statements)}"
        )
    statement = statements[0]
    try:
        kind_of = statement.type
    except ValueError:
        # A statement DuckDB parses but its Python enum has no name for (`CONNECT` in
        # DuckDB 2.0 is type 31): not a SELECT, so refused like any other.
        raise LockdownError(
            "this kind of statement is not allowed; only one read-only SELECT per call"
        ) from None
    if kind_of not in allowed:
        kind = kind_of.name
        where = "EXPLAIN of " if explained else ""
        raise LockdownError(
            f"{where}{kind} statements are not allowed; only one read-only SELECT per call"
        )
    return kind_of, str(statement.query)


def _explained(text: str) -> str:
    """The statement an EXPLAIN wraps: what follows `EXPLAIN [ANALYZE] [(options)]`.

    Found with DuckDB's own tokenizer (comments are skipped; its offsets count UTF-8
    bytes). Anything unexpected gives text that is not one SELECT, which the gate refuses.
    """
    raw = text.encode()
    marks = duckdb.tokenize(text)
    words: list[tuple[int, str, Any]] = []
    for index, (start, kind) in enumerate(marks):
        if kind == duckdb.token_type.comment:
            continue
        end = marks[index + 1][0] if index + 1 < len(marks) else len(raw)
        words.append((start, raw[start:end].decode(errors="replace").strip(), kind))
    if not words or words[0][1].upper() != "EXPLAIN":
        return ""
    position = 1
    if position < len(words) and words[position][1].upper() == "ANALYZE":
        position += 1
    if position < len(words) and words[position][1] == "(":
        depth = 0
        while position < len(words):
            _, word, kind = words[position]
            if kind == duckdb.token_type.operator:
                depth += word.count("(") - word.count(")")
            position += 1
            if depth <= 0:
                break
    if position >= len(words):
        return ""
    return raw[words[position][0] :].decode()


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


def _end_transaction(con: Any) -> None:
    """End the connection's read-only transaction (an aborted one too)."""
    with suppress(duckdb.TransactionException):  # none open: a statement failed to start
        con.execute("ROLLBACK")


def _release(con: Any, catalog: str) -> None:
    """Drop a session's catalog and close its connection."""
    try:
        _end_transaction(con)
        con.execute("USE memory")
        con.execute(f"DETACH {quote_identifier(catalog)}")
    except duckdb.Error as exc:  # a closed or broken connection: nothing left to free
        log.debug("releasing %s: %s", catalog, exc)
    finally:
        con.close()


_SANDBOX_TEXTS = (
    "disabled by configuration",
    "disabled through configuration",
    "the configuration has been locked",
    "transaction is launched in read-only mode",
)


@contextmanager
def _sql_errors() -> Iterator[None]:
    """DuckDB's errors as Shoal's, with DuckDB's own message."""
    try:
        yield
    except duckdb.Error as exc:
        raise _shoal_error(exc) from exc


def _shoal_error(exc: duckdb.Error) -> ShoalError:
    message = _duck_message(exc)
    # A guard DuckDB reports under another class counts as the sandbox too (a table
    # function reaching a file, a setting changed through a function, a write in a
    # read-only transaction).
    if isinstance(exc, duckdb.PermissionException) or any(t in str(exc) for t in _SANDBOX_TEXTS):
        return LockdownError(f"refused by the SQL sandbox: {message}")
    if isinstance(exc, duckdb.CatalogException):
        return NotFoundError(message)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ShoalError(
            f"the query needs more memory than allowed: {message}",
            hint="raise sql_memory_limit in settings.yaml or make the query smaller",
        )
    return UsageError(f"SQL error: {message}")


def _duck_message(exc: Exception) -> str:
    text = str(exc).strip()
    for prefix in (
        "Permission Error: ",
        "Catalog Error: ",
        "Parser Error: ",
        "Binder Error: ",
        "Conversion Error: ",
        "Invalid Input Error: ",
        "TransactionContext Error: ",
    ):
        text = text.replace(prefix, "")
    return text.splitlines()[0] if text else type(exc).__name__
