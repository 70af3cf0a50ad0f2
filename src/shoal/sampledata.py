"""Deterministic generated retail data for the demo, the tests and the benchmarks.

A small business: stores in a few cities, a product catalogue in EUR, customers, and order
lines. Everything is computed by DuckDB from `range()` and hashes of the row number and a
seed, so the same seed always gives the same rows, and 10 million order lines are written
in seconds without holding them in memory.
"""

from __future__ import annotations

from pathlib import Path

from shoal.engine import trusted_connection

__all__ = ["STORES", "write_orders_csv", "write_retail_files"]

STORES = (
    ("berlin", "Berlin", "eu-de"),
    ("hamburg", "Hamburg", "eu-de"),
    ("munich", "München", "eu-de"),
    ("vienna", "Wien", "eu-at"),
    ("zurich", "Zürich", "ch"),
)
_CATEGORIES = ("coffee", "tea", "pastry", "merch", "beans")
_FIRST = ("Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hugo", "Ida", "Jonas")
_LAST = ("Müller", "Schmidt", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch")
_PAYMENTS = ("card", "cash", "mobile")


def _pick(options: tuple[str, ...], expr: str) -> str:
    """SQL that picks one of `options` by an integer expression."""
    items = ", ".join("'" + o.replace("'", "''") + "'" for o in options)
    return f"([{items}])[1 + (({expr}) % {len(options)})]"


def _rand(seed: int, salt: int, column: str = "i") -> str:
    """SQL for a deterministic pseudo-random non-negative integer per row."""
    return f"CAST(hash({column}, {seed}, {salt}) % 1000003 AS BIGINT)"


def orders_sql(rows: int, seed: int = 7, products: int = 200, customers: int = 5000) -> str:
    """SQL for `rows` order lines (order_id, store, customer_id, product_id, ...)."""
    store_names = tuple(s[0] for s in STORES)
    return f"""
        SELECT
            i + 1 AS order_id,
            {_pick(store_names, _rand(seed, 1))} AS store,
            1 + {_rand(seed, 2)} % {customers} AS customer_id,
            'customer' || (1 + {_rand(seed, 2)} % {customers}) || '@example.com'
                AS customer_email,
            1 + {_rand(seed, 3)} % {products} AS product_id,
            'SKU-' || lpad(CAST(1 + {_rand(seed, 3)} % {products} AS VARCHAR), 6, '0') AS sku,
            1 + {_rand(seed, 4)} % 5 AS quantity,
            round(1.5 + ({_rand(seed, 5)} % 2000) / 100.0, 2) AS unit_price,
            round((1 + {_rand(seed, 4)} % 5) * (1.5 + ({_rand(seed, 5)} % 2000) / 100.0), 2)
                AS amount,
            TIMESTAMP '2026-01-01' + to_seconds({_rand(seed, 6)} * 31) AS ordered_at,
            {_pick(_PAYMENTS, _rand(seed, 7))} AS payment
        FROM range({int(rows)}) AS t(i)
    """


def write_orders_csv(path: Path, rows: int, seed: int = 7) -> Path:
    """Write `rows` order lines as a CSV file with a header and give its path."""
    target = str(path).replace("'", "''")
    with trusted_connection() as con:
        con.execute(f"COPY ({orders_sql(rows, seed)}) TO '{target}' (FORMAT csv, HEADER true)")
    return path


def write_retail_files(folder: Path, seed: int = 7, orders: int = 20_000) -> dict[str, Path]:
    """Write a small business's files of several kinds; give product name -> file.

    stores.csv (semicolon-separated, as German spreadsheet exports are), catalogue.parquet,
    customers.ndjson and orders.csv.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "stores": folder / "stores.csv",
        "catalogue": folder / "catalogue.parquet",
        "customers": folder / "customers.ndjson",
        "orders": folder / "orders.csv",
    }
    stores = " UNION ALL ".join(
        f"SELECT '{name}' AS store, '{city}' AS city, '{region}' AS region"
        for name, city, region in STORES
    )
    catalogue = f"""
        SELECT i + 1 AS product_id,
               {_pick(_CATEGORIES, _rand(seed, 11))} || '-' || (i + 1) AS name,
               {_pick(_CATEGORIES, _rand(seed, 11))} AS category,
               round(1.5 + ({_rand(seed, 12)} % 2000) / 100.0, 2) AS list_price
        FROM range(200) AS t(i)
    """
    customers = f"""
        SELECT i + 1 AS customer_id,
               {_pick(_FIRST, _rand(seed, 21))} || ' ' || {_pick(_LAST, _rand(seed, 22))} AS name,
               'customer' || (i + 1) || '@example.com' AS email,
               {_pick(tuple(s[1] for s in STORES), _rand(seed, 23))} AS city,
               DATE '2020-01-01' + CAST({_rand(seed, 24)} % 2000 AS INTEGER) AS since
        FROM range(5000) AS t(i)
    """

    def quoted(path: Path) -> str:
        return "'" + str(path).replace("'", "''") + "'"

    with trusted_connection() as con:
        con.execute(f"COPY ({stores}) TO {quoted(paths['stores'])} (FORMAT csv, DELIMITER ';')")
        con.execute(f"COPY ({catalogue}) TO {quoted(paths['catalogue'])} (FORMAT parquet)")
        con.execute(f"COPY ({customers}) TO {quoted(paths['customers'])} (FORMAT json)")
    write_orders_csv(paths["orders"], orders, seed)
    return paths
