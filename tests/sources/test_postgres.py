"""PostgreSQL against a real server the tests start (initdb + pg_ctl on a free port)."""

from __future__ import annotations

import decimal

import adbc_driver_postgresql.dbapi as pg
import pytest

from shoal.errors import SourceError
from shoal.sources.postgres import mask_password
from tests.sources.util import read

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def shop(postgres):
    con = pg.connect(postgres.url)
    cur = con.cursor()
    cur.execute("CREATE SCHEMA IF NOT EXISTS erp")
    cur.execute(
        "CREATE TABLE erp.stock (sku text PRIMARY KEY, qty integer, price numeric(10,2), "
        "seen timestamptz, active boolean)"
    )
    cur.execute(
        "INSERT INTO erp.stock SELECT 'sku' || i, i, i * 1.25, "
        "TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 hour', i % 2 = 0 "
        "FROM generate_series(1, 5000) AS i"
    )
    cur.execute('CREATE TABLE "Odd ""Name" (a int)')
    cur.execute('INSERT INTO "Odd ""Name" VALUES (1)')
    con.commit()
    cur.close()
    con.close()
    return postgres


def test_table_streams_every_row_with_types(shop):
    table = read(shop.url, table="erp.stock")
    assert table.num_rows == 5000
    assert table.column("qty").to_pylist()[:3] == [1, 2, 3]
    price = table.column("price").to_pylist()[3]
    assert decimal.Decimal(str(price)) == decimal.Decimal("5.00")
    assert table.schema.field("seen").type.tz is not None
    assert table.column("active").to_pylist()[:2] == [False, True]


def test_query(shop):
    table = read(shop.url, query="SELECT count(*) AS n, sum(qty) AS total FROM erp.stock")
    assert table.to_pylist() == [{"n": 5000, "total": 5000 * 5001 // 2}]


def test_quoted_table_name(shop):
    assert read(shop.url, table='Odd "Name').to_pydict() == {"a": [1]}


def test_query_runs_read_only(shop):
    with pytest.raises(SourceError, match="read-only"):
        read(shop.url, query="DELETE FROM erp.stock RETURNING sku")
    assert read(shop.url, query="SELECT count(*) AS n FROM erp.stock").to_pylist() == [{"n": 5000}]


def test_table_or_query_is_required(shop):
    with pytest.raises(SourceError, match="exactly one"):
        read(shop.url)


def test_unknown_table(shop):
    with pytest.raises(SourceError, match="nope"):
        read(shop.url, table="nope")


def test_wrong_password_never_shows_it(shop):
    bad = shop.url.replace(shop.password, "wrong-pass-123")
    with pytest.raises(SourceError) as info:
        read(bad, table="erp.stock")
    assert "wrong-pass-123" not in str(info.value)
    assert "***" in str(info.value)


def test_unreachable_server(shop):
    url = "postgresql://u:topsecret@127.0.0.1:1/db"
    with pytest.raises(SourceError) as info:
        read(url, table="t")
    assert "topsecret" not in str(info.value)


def test_mask_password():
    assert mask_password("postgresql://me:pw@host:5/db") == "postgresql://me:***@host:5/db"
    assert mask_password("postgresql://host/db") == "postgresql://host/db"


def test_publish_from_postgres(shop, tmp_path):
    from shoal.node import Node
    from shoal.sources import SourceOptions

    node = Node.init(tmp_path / "home", "erp")
    result = node.publish("stock", shop.url, options=SourceOptions(table="erp.stock"))
    assert result.rows_total == 5000
    got = node.sql("SELECT sum(qty) AS s FROM stock").read_all().to_pylist()
    assert got == [{"s": 5000 * 5001 // 2}]
    assert "topsecret" not in str(node.history("stock"))
