"""The locked-down SQL session: every escape the issue names is tried and refused."""

from __future__ import annotations

import gc

import pyarrow as pa
import pytest

from shoal import engine
from shoal.engine import LockedSession, quote_identifier
from shoal.errors import LockdownError, NotFoundError, UsageError


@pytest.fixture
def session():
    with LockedSession(memory_limit="512MB", threads=1) as s:
        s.expose({("berlin", "sales"): pa.table({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.0]})})
        s.lock()
        yield s


def test_product_visible_qualified_and_plain(session):
    assert session.run("SELECT sum(amount) AS s FROM berlin.sales").read_all().to_pylist() == [
        {"s": 7.0}
    ]
    assert session.run("SELECT count(*) AS n FROM sales").read_all().column("n")[0].as_py() == 3


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM 'data.csv'",
        "COPY berlin.sales TO 'out.csv'",
        "COPY (SELECT 1) TO '/tmp/shoal-escape.csv'",
        "ATTACH '/tmp/other.db' AS other",
        "ATTACH ':memory:' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "LOAD parquet",
        "SET memory_limit = '64GB'",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "PRAGMA version",
        "PRAGMA enable_profiling",
        "EXPORT DATABASE '/tmp/shoal-export'",
        "IMPORT DATABASE '/tmp/shoal-export'",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO berlin.sales VALUES (4, 1.0)",
        "DELETE FROM berlin.sales",
        "UPDATE berlin.sales SET amount = 0",
        "DROP VIEW berlin.sales",
        "CALL pragma_version()",
        "CHECKPOINT",
        "DETACH memory",
        "USE berlin",
        "BEGIN TRANSACTION",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "SELECT 1; SELECT 2",
        "SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'",
    ],
)
def test_escapes_are_refused(session, sql, tmp_path):
    with pytest.raises(LockdownError):
        session.run(sql)


def test_escape_attempts_touch_no_file(session, tmp_path):
    target = tmp_path / "leak.csv"
    with pytest.raises(LockdownError):
        session.run(f"COPY (SELECT * FROM berlin.sales) TO '{target}'")
    assert not target.exists()


def test_python_variables_are_not_scanned(session):
    secret_table = pa.table({"x": [42]})  # noqa: F841 -- a replacement scan would find it
    with pytest.raises(NotFoundError):
        session.run("SELECT * FROM secret_table")


def test_bad_sql_is_a_usage_error(session):
    with pytest.raises(UsageError):
        session.run("SELEC 1")
    with pytest.raises(UsageError):
        session.run("SELECT nosuchcolumn FROM berlin.sales")


def test_unknown_table_is_not_found(session):
    with pytest.raises(NotFoundError):
        session.run("SELECT * FROM nowhere.nothing")


def test_empty_statement_is_refused(session):
    with pytest.raises(LockdownError):
        session.run("   ")


def test_explain_is_allowed(session):
    rows = session.run("EXPLAIN SELECT * FROM berlin.sales").read_all()
    assert rows.num_rows >= 1


def test_configuration_is_locked_after_lock(session):
    with pytest.raises(LockdownError):
        session.run("SET threads = 1")
    setting = session.run(
        "SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'"
    ).read_all()
    assert setting.column("value")[0].as_py() == "false"


def test_same_name_in_two_schemas_gets_no_plain_alias():
    with LockedSession(memory_limit="256MB") as s:
        s.expose(
            {
                ("berlin", "sales"): pa.table({"a": [1]}),
                ("paris", "sales"): pa.table({"a": [2]}),
            }
        )
        assert s.run("SELECT a FROM paris.sales").read_all().column("a")[0].as_py() == 2
        with pytest.raises(NotFoundError):
            s.run("SELECT * FROM sales")


@pytest.mark.parametrize("name", ["plain", 'with"quote', "with space", "ünïcode"])
def test_quote_identifier_round_trips(name):
    with LockedSession(memory_limit="256MB") as s:
        s.expose({("main", name): pa.table({"v": [1]})}, aliases=False)
        got = s.run(f"SELECT v FROM main.{quote_identifier(name)}").read_all()
        assert got.column("v")[0].as_py() == 1


def _attached() -> int:
    """Catalogs attached to the shared database of 256MB sessions (user SQL may not list
    them, so this asks the database itself)."""
    cursor = engine._shared_database("256MB", 0).cursor()
    try:
        found = cursor.execute("SELECT count(*) FROM duckdb_databases()").fetchone()
        return int(found[0]) - 1  # not `memory`, the database's own
    finally:
        cursor.close()


def test_sessions_sharing_a_database_see_only_their_own_tables():
    first = LockedSession(memory_limit="256MB")
    second = LockedSession(memory_limit="256MB")
    first.expose({("berlin", "sales"): pa.table({"a": [1]})})
    second.expose({("berlin", "sales"): pa.table({"a": [2]})})
    first_reader = first.run("SELECT a FROM berlin.sales")
    assert second.run("SELECT a FROM berlin.sales").read_all().column("a").to_pylist() == [2]
    assert first_reader.read_all().column("a").to_pylist() == [1]
    # Listing the catalogs, or naming another session's, is refused: the views of another
    # session hold its policy's SQL (and the mask secret in it).
    for sql in (
        "SELECT database_name FROM duckdb_databases()",
        "SELECT sql FROM duckdb_views()",
        f"SELECT a FROM {quote_identifier(first._catalog)}.berlin.sales",
    ):
        with pytest.raises(LockdownError):
            second.run(sql)
    first.close()
    second.close()


def test_plain_tables_in_main_are_the_sessions_own_too():
    """A coordinator's fragment results are registered on the session's connection (no
    view in the catalog): the same name in two sessions reads each its own rows, and a
    third session that was given none does not find them."""
    first, second = LockedSession(memory_limit="256MB"), LockedSession(memory_limit="256MB")
    first.expose({("main", "f0"): pa.table({"a": [1]})}, aliases=False)
    second.expose({("main", "f0"): pa.table({"a": [2]})}, aliases=False)
    assert first.run("SELECT a FROM f0").read_all().column("a").to_pylist() == [1]
    assert second.run("SELECT a FROM main.f0").read_all().column("a").to_pylist() == [2]
    third = LockedSession(memory_limit="256MB")
    third.expose({("main", "other"): pa.table({"a": [3]})})
    for sql in ("SELECT a FROM f0", "SELECT a FROM temp.main.f0"):
        with pytest.raises((NotFoundError, LockdownError)):
            third.run(sql)
    for session in (first, second, third):
        session.close()


def test_sessions_release_their_catalog_when_closed_or_dropped():
    before = _attached()
    with LockedSession(memory_limit="256MB") as s:
        s.expose({("berlin", "sales"): pa.table({"a": list(range(10))})})
        assert _attached() == before + 1
    assert _attached() == before
    reader = LockedSession(memory_limit="256MB")
    reader.expose({("main", "t"): pa.table({"a": [1, 2]})})
    stream = reader.run("SELECT a FROM t")
    del reader  # the stream keeps the session alive until it is read or dropped
    assert stream.read_all().num_rows == 2
    del stream
    gc.collect()
    assert _attached() == before
