"""SQLite: tables, queries, dynamic typing, read-only access."""

from __future__ import annotations

import sqlite3

import pytest

from shoal.errors import SourceError
from tests.sources.util import read


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE sales (id INTEGER, item TEXT, price REAL, note)")
    con.executemany(
        "INSERT INTO sales VALUES (?, ?, ?, ?)",
        [(i, f"item{i}", i * 1.5, None) for i in range(1, 3001)] + [(None, "x", 2, "late text")],
    )
    con.execute("CREATE TABLE mixed (v)")
    con.executemany("INSERT INTO mixed VALUES (?)", [(1,), (2.5,), ("abc",)])
    con.execute('CREATE TABLE "odd ""name" (a INTEGER)')
    con.execute('INSERT INTO "odd ""name" VALUES (7)')
    con.commit()
    con.close()
    return path


def url(path):
    return f"sqlite:///{path}"


def test_table_with_types_from_all_rows(db):
    table = read(url(db), table="sales")
    assert table.num_rows == 3001
    assert str(table.schema.field("id").type) == "int64"
    assert str(table.schema.field("price").type) == "double"
    assert str(table.schema.field("note").type) == "string"
    assert table.column("note").to_pylist()[-1] == "late text"


def test_mixed_storage_classes_become_text(db):
    assert read(url(db), table="mixed").column("v").to_pylist() == ["1", "2.5", "abc"]


def test_query(db):
    table = read(url(db), query="SELECT count(*) AS n, max(price) AS top FROM sales")
    assert table.to_pylist() == [{"n": 3001, "top": 4500.0}]


def test_odd_table_names_are_quoted(db):
    assert read(url(db), table='odd "name').to_pydict() == {"a": [7]}


def test_query_cannot_write(db):
    with pytest.raises(SourceError):
        read(url(db), query="DELETE FROM sales RETURNING id")
    assert read(url(db), query="SELECT count(*) AS n FROM sales").to_pylist() == [{"n": 3001}]


def test_table_or_query_is_required(db):
    with pytest.raises(SourceError, match="exactly one"):
        read(url(db))
    with pytest.raises(SourceError, match="exactly one"):
        read(url(db), table="sales", query="SELECT 1")


def test_unknown_table_lists_tables(db):
    with pytest.raises(SourceError, match="mixed"):
        read(url(db), table="nope")


def test_missing_database_is_not_created(tmp_path):
    missing = tmp_path / "none.db"
    with pytest.raises(SourceError, match="does not exist"):
        read(url(missing), table="t")
    assert not missing.exists()


def test_not_a_database(tmp_path):
    path = tmp_path / "fake.db"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(SourceError, match="not a SQLite database"):
        read(url(path), table="t")


@pytest.mark.parametrize("spec", ["sqlite://", "sqlite:///", "sqlite:relative.db"])
def test_bad_urls(spec):
    with pytest.raises(SourceError):
        read(spec, table="t")
