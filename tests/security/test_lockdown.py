"""Every way out of the SQL sandbox, tried on each path user SQL takes: `Node.sql`, the
federated `Node.query` (planner first), the CLI, the HTTP API, and a serving node that runs
a fragment a real member signed. Each must fail closed with a clear ShoalError, and leave
no file, no leaked byte and no change behind."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shoal import engine
from shoal.cli import app as cli
from shoal.engine import LockedSession
from shoal.errors import LockdownError, ShoalError
from shoal.server.http import create_app
from shoal.server.metrics import Metrics
from tests.conftest import tree_snapshot
from tests.signing import NodeSigner

from .escapes import ESCAPES, HARMLESS, SECRET_TEXT, Escape

BY_ID = [pytest.param(e, id=e.id) for e in ESCAPES]


def _sql(lab, escape: Escape) -> str:
    return escape.fill(str(lab.bait.secret), lab.bait.target())


def _assert_nothing_leaked(error: ShoalError) -> None:
    assert SECRET_TEXT not in error.message and SECRET_TEXT not in (error.hint or "")
    assert "Traceback" not in error.message


def _assert_engine_intact(node) -> None:
    """The product answers as before and the shared database is as locked and as empty."""
    total = node.sql("SELECT sum(amount) AS s, count(*) AS n FROM orders").read_all()
    assert total.to_pylist() == [{"s": 7.5, "n": 3}]
    settings = node.home.settings
    # User SQL may not list the database's objects: ask the shared database itself.
    cursor = engine._shared_database(settings.sql_memory_limit, settings.sql_threads).cursor()
    try:
        rows = cursor.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'autoload_known_extensions', "
            "'autoinstall_known_extensions', 'allow_unsigned_extensions')"
        ).fetchall()
        assert dict(rows) == {
            "enable_external_access": "false",
            "lock_configuration": "true",
            "autoload_known_extensions": "false",
            "autoinstall_known_extensions": "false",
            "allow_unsigned_extensions": "false",
        }
        made = cursor.execute(
            "SELECT (SELECT count(*) FROM duckdb_tables()) + "
            "(SELECT count(*) FROM duckdb_sequences()) + "
            "(SELECT count(*) FROM duckdb_functions() WHERE NOT internal) AS n"
        ).fetchone()
        assert made is not None and made[0] == 0, "an escape created something"
    finally:
        cursor.close()


@pytest.mark.parametrize("escape", BY_ID)
def test_local_sql_refuses(lab, escape):
    before = tree_snapshot(lab.node.home.root)
    with pytest.raises(ShoalError) as caught:
        lab.node.sql(_sql(lab, escape)).read_all()
    assert type(caught.value) is escape.local, caught.value.message
    _assert_nothing_leaked(caught.value)
    lab.bait.assert_untouched()
    assert tree_snapshot(lab.node.home.root) == before
    _assert_engine_intact(lab.node)


@pytest.mark.parametrize("escape", BY_ID)
def test_federated_query_refuses_alike(lab, escape):
    before = tree_snapshot(lab.node.home.root)
    with pytest.raises(ShoalError) as caught:
        lab.node.query(_sql(lab, escape)).read_all()
    assert type(caught.value) is escape.via_planner, caught.value.message
    _assert_nothing_leaked(caught.value)
    lab.bait.assert_untouched()
    assert tree_snapshot(lab.node.home.root) == before
    _assert_engine_intact(lab.node)


@pytest.mark.parametrize("escape", BY_ID)
def test_cli_exits_with_the_refusal_code(lab, escape):
    home = str(lab.node.home.root)
    result = CliRunner().invoke(cli, ["sql", "--home", home, "--", _sql(lab, escape)])
    assert result.exit_code == escape.via_planner.exit_code, result.output
    assert result.exit_code in (2, 4, 6)
    assert "Traceback" not in result.output and SECRET_TEXT not in result.output
    lab.bait.assert_untouched()


@pytest.fixture(scope="module")
def client(lab):
    app = create_app(lab.node, Metrics(lab.node))
    # As the node's own owner (a request signed with its key), like `--at` from its home.
    with TestClient(app, raise_server_exceptions=False) as c:
        c.auth = NodeSigner(lab.node.home, lab.node.name)
        yield c


@pytest.mark.parametrize("escape", BY_ID)
@pytest.mark.parametrize("endpoint", ["/api/v1/query", "/api/v1/explain"])
def test_http_refuses_with_a_json_error(lab, client, escape, endpoint):
    # As JSON escapes, so any text can be sent (a lone surrogate too).
    body = json.dumps({"sql": _sql(lab, escape), "analyze": True}).encode()
    response = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code == 422:  # refused by the request's own schema (size, empty)
        assert answer["error"] == "UsageError"
    else:
        assert response.status_code == escape.via_planner.http_status, response.text
        assert answer["error"] == escape.via_planner.__name__
    assert SECRET_TEXT not in response.text
    lab.bait.assert_untouched()


@pytest.mark.parametrize(("sql", "value"), HARMLESS)
def test_statements_inside_comments_and_strings_do_not_run(lab, sql, value):
    text = sql.replace("{out}", lab.bait.target())
    for run in (lab.node.sql, lab.node.query):
        assert run(text).read_all().column("v").to_pylist() == [value]
    lab.bait.assert_untouched()
    _assert_engine_intact(lab.node)


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN SELECT * FROM orders",
        "EXPLAIN ANALYZE SELECT sum(amount) FROM orders",
        "/* why */ EXPLAIN /* not */ ANALYZE -- now\n SELECT 1",
        "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN (ANALYZE, FORMAT json) WITH t AS (SELECT 1 AS x) SELECT * FROM t",
        "explain analyze select 'ü€' as x;",
    ],
)
def test_explain_of_one_select_is_still_allowed(lab, sql):
    assert lab.node.sql(sql).read_all().num_rows >= 1


def test_one_session_cannot_rewrite_another_sessions_tables():
    """The hole EXPLAIN ANALYZE opened: it ran DDL, in any catalog of the shared database,
    so one query could change what a concurrent one read."""
    victim = LockedSession(memory_limit="256MB", threads=1)
    victim.expose({("berlin", "sales"): pa.table({"secret": [42]})})
    victim.lock()
    attacker = LockedSession(memory_limit="256MB", threads=1)
    attacker.expose({("paris", "t"): pa.table({"x": [1]})})
    attacker.lock()
    catalog = victim._catalog
    for sql in (
        f"EXPLAIN ANALYZE CREATE OR REPLACE VIEW {catalog}.berlin.sales AS SELECT 666 AS secret",
        f"EXPLAIN ANALYZE DROP VIEW {catalog}.berlin.sales",
        "EXPLAIN ANALYZE CREATE TABLE memory.main.shared AS SELECT 1 AS x",
    ):
        with pytest.raises(LockdownError):
            attacker.run(sql)
    assert victim.run("SELECT secret FROM berlin.sales").read_all().to_pylist() == [{"secret": 42}]
    victim.close()
    attacker.close()


def test_a_statement_past_the_gate_still_cannot_write(monkeypatch):
    """The second wall: statements run in a read-only transaction, so a write the gate
    missed is refused by DuckDB itself."""
    session = LockedSession(memory_limit="256MB", threads=1)
    session.expose({("berlin", "sales"): pa.table({"a": [1]})})
    session.lock()
    monkeypatch.setattr(LockedSession, "_gate", staticmethod(lambda sql: sql))
    for sql in (
        "EXPLAIN ANALYZE CREATE OR REPLACE VIEW berlin.sales AS SELECT 2 AS a",
        "EXPLAIN ANALYZE CREATE TABLE memory.main.t AS SELECT 1",
        "EXPLAIN ANALYZE CREATE MACRO m() AS 1",
    ):
        with pytest.raises(LockdownError, match="read-only"):
            session.run(sql)
    assert session.run("SELECT a FROM berlin.sales").read_all().to_pylist() == [{"a": 1}]
    session.close()


def test_deep_nesting_in_a_policy_guarded_session_is_refused_cleanly():
    """A guarded session (policy views) parses the statement in Python too: nesting DuckDB
    accepts must not blow Python's stack into an internal error."""
    session = LockedSession(memory_limit="256MB", threads=1)
    session.expose(
        {("berlin", "sales"): pa.table({"a": [1]})},
        views={("berlin", "sales"): lambda source: f"SELECT a FROM {source}"},
    )
    session.lock()
    with pytest.raises(LockdownError):
        session.run("SELECT " + "(" * 400 + "1" + ")" * 400 + " FROM berlin.sales")
    session.close()


# -- the serving side: a fragment a real member signed ----------------------------------
@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_signed_harmless_fragment_is_served(served):
    ticket = served.ticket("SELECT sum(amount) AS s, count(*) AS n FROM orders")
    answer = served.do_get(ticket, served.signed(ticket))
    assert answer.to_pylist() == [{"s": 7.5, "n": 3}]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("escape", BY_ID)
def test_serving_node_checks_fragments_itself(served, escape):
    """The coordinator's planner never saw this SQL: the serving node must refuse it, even
    though a member signed the request."""
    sql = escape.fill(str(served.bait.secret), served.bait.target())
    ticket = served.ticket(sql)
    error = served.refusal(ticket, served.signed(ticket))
    assert error["error"] == escape.local.__name__, error
    assert SECRET_TEXT not in str(error)
    served.bait.assert_untouched()
    assert not list(served.berlin.home.rglob("escaped*"))
    check = served.ticket("SELECT sum(amount) AS s, count(*) AS n FROM orders")
    assert served.do_get(check, served.signed(check)).to_pylist() == [{"s": 7.5, "n": 3}]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("escape", BY_ID)
def test_flight_sql_ticket_refuses_alike(served, escape):
    """A plain SQL ticket goes through the planner, as HTTP does (signed by a member; an
    unsigned one is refused before it is read)."""
    sql = escape.fill(str(served.bait.secret), served.bait.target())
    ticket = json.dumps({"sql": sql}).encode()
    # Unsigned: refused as a stranger's, or as malformed when it cannot even be read.
    assert served.refusal(ticket, None)["error"] in ("TokenError", "UsageError")
    error = served.refusal(ticket, served.signed(ticket))
    assert error["error"] == escape.via_planner.__name__, error
    assert SECRET_TEXT not in str(error)
    served.bait.assert_untouched()
