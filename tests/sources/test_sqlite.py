"""SQLite: tables, queries, dynamic typing over all rows, read-only access."""

from __future__ import annotations

import os
import sqlite3

import pytest

from shoal.errors import SourceError
from shoal.sources import BATCH_ROWS, SourceOptions, open_source
from tests.sources.util import read

# ADBC types a column from its first 1,024 rows; these tables change kind after that.
LATE = 3000


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE sales (id INTEGER, item TEXT, price REAL, note)")
    con.executemany(
        "INSERT INTO sales VALUES (?, ?, ?, ?)",
        [(i, f"item{i}", i * 1.5, None) for i in range(1, LATE + 1)] + [(None, "x", 2, "late")],
    )
    con.execute("CREATE TABLE ints_then_text (v)")
    con.executemany("INSERT INTO ints_then_text VALUES (?)", [(i,) for i in range(LATE)])
    con.execute("INSERT INTO ints_then_text VALUES ('text')")
    con.execute("CREATE TABLE ints_then_real (v)")
    con.executemany("INSERT INTO ints_then_real VALUES (?)", [(i,) for i in range(LATE)])
    con.execute("INSERT INTO ints_then_real VALUES (2.5)")
    con.execute("CREATE TABLE only_nulls (v INTEGER)")
    con.executemany("INSERT INTO only_nulls VALUES (?)", [(None,)] * 3)
    con.execute("CREATE TABLE files (name TEXT, data BLOB)")
    con.executemany("INSERT INTO files VALUES (?, ?)", [("a", None)] * LATE + [("b", b"\x00\xff")])
    con.execute("CREATE TABLE mixed_blob (v)")
    con.executemany("INSERT INTO mixed_blob VALUES (?)", [(b"\x01",), ("text",)])
    con.execute("CREATE TABLE empty (a INTEGER, b TEXT)")
    con.execute('CREATE TABLE "odd ""name" (a INTEGER)')
    con.execute('INSERT INTO "odd ""name" VALUES (7)')
    con.execute("CREATE VIEW cheap AS SELECT item FROM sales WHERE price < 3")
    con.commit()
    con.close()
    return path


def url(path):
    return f"sqlite:///{path}"


def test_table_with_types_from_all_rows(db):
    table = read(url(db), table="sales")
    assert table.num_rows == LATE + 1
    assert [str(t) for t in table.schema.types] == ["int64", "string", "double", "string"]
    assert table.slice(0, 2).to_pylist() == [
        {"id": 1, "item": "item1", "price": 1.5, "note": None},
        {"id": 2, "item": "item2", "price": 3.0, "note": None},
    ]
    assert table.slice(LATE).to_pylist() == [
        {"id": None, "item": "x", "price": 2.0, "note": "late"}
    ]


def test_late_text_makes_a_text_column(db):
    values = read(url(db), table="ints_then_text").column("v").to_pylist()
    assert values == [str(i) for i in range(LATE)] + ["text"]


def test_late_real_makes_a_float_column(db):
    table = read(url(db), table="ints_then_real")
    assert str(table.schema.field("v").type) == "double"
    assert table.column("v").to_pylist() == [float(i) for i in range(LATE)] + [2.5]


def test_only_nulls_make_a_text_column(db):
    table = read(url(db), table="only_nulls")
    assert str(table.schema.field("v").type) == "string"
    assert table.column("v").to_pylist() == [None] * 3


def test_blobs_after_nulls(db):
    table = read(url(db), table="files")
    assert str(table.schema.field("data").type) == "binary"
    assert table.column("data").to_pylist()[-2:] == [None, b"\x00\xff"]


def test_blob_mixed_with_text_is_refused(db):
    with pytest.raises(SourceError) as info:
        read(url(db), table="mixed_blob")
    assert str(info.value).startswith("column 'v' of ")
    assert str(info.value).endswith(" mixes binary values with others")


def test_empty_table_keeps_its_columns(db):
    table = read(url(db), table="empty")
    assert table.num_rows == 0
    assert table.column_names == ["a", "b"]


def test_query_and_view(db):
    table = read(url(db), query="SELECT count(*) AS n, max(price) AS top FROM sales")
    assert table.to_pylist() == [{"n": LATE + 1, "top": LATE * 1.5}]
    assert read(url(db), table="cheap").column("item").to_pylist() == ["item1", "x"]


def test_query_order_semicolon_comment_and_repeated_names(db):
    query = "WITH s AS (SELECT id FROM sales) SELECT id, id FROM s ORDER BY id DESC LIMIT 3"
    table = read(url(db), query=query + " -- newest first")
    assert table.column_names == ["id", "id:1"]  # SQLite's own names for the repeat
    assert table.column(0).to_pylist() == [LATE, LATE - 1, LATE - 2]
    assert read(url(db), query="SELECT 1 AS one; \n").to_pydict() == {"one": [1]}


def test_odd_table_names_are_quoted(db):
    assert read(url(db), table='odd "name').to_pydict() == {"a": [7]}


def test_streams_bounded_batches(tmp_path):
    path = tmp_path / "big.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (i INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(BATCH_ROWS * 2 + 3)))
    con.commit()
    con.close()
    with open_source(url(path), SourceOptions(table="t")) as reader:
        batches = list(reader)
    assert max(b.num_rows for b in batches) <= BATCH_ROWS
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(BATCH_ROWS * 2 + 3))


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM sales RETURNING id",
        "DROP TABLE sales",
        "PRAGMA query_only = OFF",
        "SELECT 1; DELETE FROM sales",
    ],
)
def test_query_cannot_write(db, query):
    with pytest.raises(SourceError) as info:
        read(url(db), query=query)
    assert "syntax error" in str(info.value)
    assert "one SELECT" in (info.value.hint or "")
    assert read(url(db), query="SELECT count(*) AS n FROM sales").to_pylist() == [{"n": LATE + 1}]


def test_query_cannot_attach_and_create_a_database(db, tmp_path):
    target = tmp_path / "new.db"
    with pytest.raises(SourceError):
        read(url(db), query=f"ATTACH 'file:{target}?mode=rwc' AS x")
    assert not target.exists()


def test_table_or_query_is_required(db):
    for options in ({}, {"table": "sales", "query": "SELECT 1"}):
        with pytest.raises(SourceError) as info:
            read(url(db), **options)
        assert str(info.value) == "a SQLite source needs exactly one of --table or --query"


def test_unknown_table_lists_tables(db):
    with pytest.raises(SourceError) as info:
        read(url(db), table="nope")
    assert str(info.value).endswith(
        "has no table 'nope'; its tables: cheap, empty, files, ints_then_real, "
        'ints_then_text, mixed_blob, odd "name, only_nulls, sales'
    )


def test_missing_database_is_not_created(tmp_path):
    missing = tmp_path / "none.db"
    with pytest.raises(SourceError) as info:
        read(url(missing), table="t")
    assert str(info.value) == f"SQLite database {missing} does not exist"
    assert not missing.exists()


def test_not_a_database(tmp_path):
    path = tmp_path / "fake.db"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(SourceError) as info:
        read(url(path), table="t")
    assert str(info.value) == f"{path} is not a SQLite database"


def test_truncated_database(db):
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceError):
        read(url(db), table="files")


def test_relative_and_non_utf8_paths(db, tmp_path, monkeypatch):
    odd = tmp_path / os.fsdecode(b"caf\xe9 shop.db")
    odd.write_bytes(db.read_bytes())
    assert read(url(odd), table='odd "name').to_pydict() == {"a": [7]}
    monkeypatch.chdir(tmp_path)
    assert read("sqlite:///shop.db", table='odd "name').to_pydict() == {"a": [7]}


@pytest.mark.parametrize("spec", ["sqlite://", "sqlite:///", "sqlite:relative.db"])
def test_bad_urls(spec):
    with pytest.raises(SourceError, match="bad SQLite URL"):
        read(spec, table="t")
