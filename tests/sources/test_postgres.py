"""PostgreSQL against a real server the tests start (initdb + pg_ctl on a free port)."""

from __future__ import annotations

import datetime as dt
import decimal

import adbc_driver_postgresql.dbapi as pg
import pytest

from shoal.errors import SourceError
from shoal.sources.postgres import mask_password
from tests.sources.util import read

pytestmark = pytest.mark.postgres

UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


@pytest.fixture(scope="module")
def shop(postgres):
    con = pg.connect(postgres.url)
    cur = con.cursor()
    for statement in (
        "CREATE SCHEMA erp",
        "CREATE TABLE erp.stock (sku text PRIMARY KEY, qty integer, price numeric(10,2), "
        "seen timestamptz, active boolean)",
        "INSERT INTO erp.stock SELECT 'sku' || i, i, i * 1.25, "
        "TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 hour', i % 2 = 0 "
        "FROM generate_series(1, 5000) AS i",
        'CREATE TABLE "Odd ""Name" (a int)',
        'INSERT INTO "Odd ""Name" VALUES (1)',
        "CREATE TYPE mood AS ENUM ('ok', 'sad')",
        "CREATE TABLE kinds (n numeric, n102 numeric(10,2), n50 numeric(50,5), "
        "tz timestamptz, ts timestamp, d date, tm time, iv interval, j json, jb jsonb, "
        "u uuid, ai int[], at text[], an numeric(10,2)[], au uuid[], b bytea, m money, "
        "ip inet, e mood, sm smallint, f4 real, ma money[])",
        "INSERT INTO kinds VALUES (1.5, 12.34, 12345678901234567890123456789012345678901.5, "
        "'2026-01-01 10:00+02', '2026-01-01 10:00', '2026-01-01', '10:30', "
        "'1 day 2 hours', '{\"a\": 1}', '{\"b\": [1, 2]}', "
        f"'{UUID}', '{{1,2}}', '{{x,y}}', '{{1.5,2}}', '{{{UUID}}}', "
        "'\\x0001', 12.5, '10.0.0.1', 'ok', 3, 1.5, '{1.5}')",
        "CREATE TABLE grid (a int[])",
        "INSERT INTO grid VALUES ('{1}'), ('{{1,2},{3,4}}')",
        "CREATE TABLE nan (v numeric(10,2))",
        "INSERT INTO nan VALUES (1), ('NaN')",
        "CREATE SEQUENCE ticket",
    ):
        cur.execute(statement)
    con.commit()
    cur.close()
    con.close()
    return postgres


def test_table_streams_every_row_with_types(shop):
    table = read(shop.url, table="erp.stock")
    assert table.num_rows == 5000
    assert [str(t) for t in table.schema.types] == [
        "string",
        "int32",
        "decimal128(10, 2)",
        "timestamp[us, tz=UTC]",
        "bool",
    ]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["sku"] == "sku1"
    assert first["qty"] == 1
    assert first["price"] == decimal.Decimal("1.25")
    assert first["seen"] == dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC)
    assert first["active"] is False
    assert sum(table.column("qty").to_pylist()) == 5000 * 5001 // 2


def test_types_become_what_a_delta_table_holds(shop):
    table = read(shop.url, table="kinds")
    types = {field.name: str(field.type) for field in table.schema}
    assert types == {
        "n": "string",
        "n102": "decimal128(10, 2)",
        "n50": "string",
        "tz": "timestamp[us, tz=UTC]",
        "ts": "timestamp[us]",
        "d": "date32[day]",
        "tm": "time64[us]",
        "iv": "string",
        "j": "string",
        "jb": "string",
        "u": "string",
        "ai": "list<item: int32>",
        "at": "list<item: string>",
        "an": "list<item: string>",
        "au": "list<item: string>",
        "b": "binary",
        "m": "string",
        "ip": "string",
        "e": "string",
        "sm": "int16",
        "f4": "float",
        "ma": "list<item: string>",
    }
    assert table.to_pylist() == [
        {
            "n": "1.5",
            "n102": decimal.Decimal("12.34"),
            "n50": "12345678901234567890123456789012345678901.50000",
            "tz": dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC),
            "ts": dt.datetime(2026, 1, 1, 10),
            "d": dt.date(2026, 1, 1),
            "tm": dt.time(10, 30),
            "iv": "P1DT2H",
            "j": '{"a": 1}',
            "jb": '{"b": [1, 2]}',
            "u": UUID,
            "ai": [1, 2],
            "at": ["x", "y"],
            "an": ["1.50", "2.00"],
            "au": [UUID],
            "b": b"\x00\x01",
            "m": "12.50",
            "ip": "10.0.0.1/32",
            "e": "ok",
            "sm": 3,
            "f4": 1.5,
            "ma": ["1.50"],
        }
    ]


def test_multi_dimensional_arrays_are_refused_not_flattened(shop):
    with pytest.raises(SourceError) as info:
        read(shop.url, table="grid")
    assert str(info.value).startswith("column 'a' from postgresql://shoal_test:***@")
    assert "arrays of two or more dimensions" in str(info.value)
    got = read(shop.url, query="SELECT a::text AS a FROM grid").column("a").to_pylist()
    assert got == ["{1}", "{{1,2},{3,4}}"]


def test_nan_in_a_decimal_column_is_refused(shop):
    with pytest.raises(SourceError, match="does not fit its column's decimal type") as info:
        read(shop.url, table="nan")
    assert "::text" in (info.value.hint or "")


def test_query(shop):
    table = read(shop.url, query="SELECT count(*) AS n, sum(qty) AS total FROM erp.stock;")
    assert table.to_pylist() == [{"n": 5000, "total": 5000 * 5001 // 2}]


def test_query_keeps_its_order_and_takes_a_trailing_comment(shop):
    query = "SELECT sku FROM erp.stock ORDER BY qty DESC LIMIT 3 -- newest"
    assert read(shop.url, query=query).column("sku").to_pylist() == [
        "sku5000",
        "sku4999",
        "sku4998",
    ]


def test_quoted_table_name(shop):
    assert read(shop.url, table='Odd "Name').to_pydict() == {"a": [1]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DELETE FROM erp.stock RETURNING sku", "syntax error"),
        ("SELECT 1; DELETE FROM erp.stock", "syntax error"),
        ("WITH d AS (DELETE FROM erp.stock RETURNING sku) SELECT * FROM d", "top level"),
        ("SELECT nextval('ticket')", "read-only transaction"),
    ],
)
def test_queries_run_read_only(shop, query, expected):
    with pytest.raises(SourceError, match=expected):
        read(shop.url, query=query)
    assert read(shop.url, query="SELECT count(*) AS n FROM erp.stock").to_pylist() == [{"n": 5000}]
    assert read(shop.url, query="SELECT last_value FROM ticket").to_pylist() == [{"last_value": 1}]


def test_table_or_query_is_required(shop):
    for options in ({}, {"table": "erp.stock", "query": "SELECT 1"}):
        with pytest.raises(SourceError) as info:
            read(shop.url, **options)
        assert str(info.value) == "a PostgreSQL source needs exactly one of --table or --query"


def test_unknown_table(shop):
    with pytest.raises(SourceError) as info:
        read(shop.url, table="erp.nope")
    assert str(info.value).endswith('relation "erp.nope" does not exist')
    assert shop.password not in str(info.value)


@pytest.mark.parametrize("table", ["a.b.c", "", "erp.", ".stock"])
def test_bad_table_names(shop, table):
    with pytest.raises(SourceError, match=r"use NAME or SCHEMA\.NAME"):
        read(shop.url, table=table)


def test_wrong_password_never_shows_it(shop):
    bad = shop.url.replace(shop.password, "wrong-pass-123")
    with pytest.raises(SourceError) as info:
        read(bad, table="erp.stock")
    assert "wrong-pass-123" not in str(info.value)
    assert str(info.value).startswith("cannot connect to postgresql://shoal_test:***@127.0.0.1:")
    assert "password authentication failed" in str(info.value)


def test_password_as_a_parameter_is_masked_too(shop):
    url = f"postgresql://127.0.0.1:{shop.port}/postgres?user=shoal_test&password=wrong-pass-456"
    with pytest.raises(SourceError) as info:
        read(url, table="erp.stock")
    assert "wrong-pass-456" not in str(info.value)
    assert "password=***" in str(info.value)


def test_unreachable_server():
    with pytest.raises(SourceError) as info:
        read("postgresql://u:topsecret@127.0.0.1:1/db", table="t")
    assert str(info.value).startswith("cannot connect to postgresql://u:***@127.0.0.1:1/db: ")
    assert "topsecret" not in str(info.value)


def test_unparsable_url_never_shows_the_password():
    with pytest.raises(SourceError) as info:
        read("postgresql://u:topsecret@[bad/db", table="t")
    assert str(info.value) == "bad PostgreSQL URL postgresql://u:***@[bad/db"


def test_mask_password():
    assert mask_password("postgresql://me:pw@host:5/db") == "postgresql://me:***@host:5/db"
    assert mask_password("postgres://me:p%40ss@host/db") == "postgres://me:***@host/db"
    assert mask_password("postgresql://host:5432/db") == "postgresql://host:5432/db"
    assert mask_password("postgresql://me@host/db?password=x&sslmode=require") == (
        "postgresql://me@host/db?password=***&sslmode=require"
    )


def test_publish_from_postgres(shop, tmp_path):
    from shoal.node import Node
    from shoal.sources import SourceOptions

    node = Node.init(tmp_path / "home", "erp")
    result = node.publish("stock", shop.url, options=SourceOptions(table="erp.stock"))
    assert result.rows_total == 5000
    got = node.sql("SELECT sum(qty) AS s FROM stock").read_all().to_pylist()
    assert got == [{"s": 5000 * 5001 // 2}]
    assert shop.password not in str(node.history("stock"))


def test_publish_every_kind_of_column(shop, tmp_path):
    from shoal.node import Node
    from shoal.sources import SourceOptions

    node = Node.init(tmp_path / "home", "erp")
    result = node.publish("kinds", shop.url, options=SourceOptions(table="kinds"))
    assert result.rows_total == 1
    got = node.sql("SELECT n102, u, iv, ai FROM kinds").read_all().to_pylist()
    assert got == [{"n102": decimal.Decimal("12.34"), "u": UUID, "iv": "P1DT2H", "ai": [1, 2]}]
