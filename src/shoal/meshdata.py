"""Generated retail data for a coffee chain's mesh: what each node of the demo owns.

    hq         catalogue   sku, name, category, unit_price, launched
    berlin     orders      order_id, customer_id, customer_name, sku, quantity, amount,
    munich     orders        ordered_at, payment (the same schema at every store)
    marketing  campaigns   campaign_id, name, store, sku, starts, ends, discount_pct

Deterministic from a seed and computed by DuckDB from `range()` and hashes, so a million
orders per store take seconds and never sit in Python lists. It is realistic where the tour
looks: stores differ in size, a few SKUs sell far more than the rest, and a campaign really
lifts its SKU's sales at its store while it runs (and discounts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from shoal.engine import trusted_connection
from shoal.errors import UsageError

__all__ = ["MESH_NODES", "STORE_SHARE", "write_bench_orders", "write_mesh_data"]

MESH_NODES = (("hq", "eu-de"), ("berlin", "eu-de"), ("munich", "eu-de"), ("marketing", "eu-de"))
STORE_SHARE = {"berlin": 1.0, "munich": 0.7}  # munich sells 70% as many orders as berlin
FIRST_DAY = "2026-08-01"
DAYS = 90
_SKUS = 40
_CAMPAIGN_PICK = 0.08  # share of a campaign store's orders switched to the campaign SKU

_NAMES = (
    "Espresso", "Cappuccino", "Flat White", "Chai Latte", "Matcha", "Crème brûlée",
    "Franzbrötchen", "Käsekuchen", "Apfelstrudel", "Bohnen Äthiopien", "Bohnen Perú",
    "Thermobecher",
)  # fmt: skip
_CATEGORIES = ("coffee", "coffee", "coffee", "tea", "tea", "pastry", "pastry", "pastry",
               "pastry", "beans", "beans", "merch")  # fmt: skip
_FIRST = ("Anna", "Jürgen", "Zoë", "Mehmet", "Ingrid", "Łukasz", "Chloé", "Björn", "Ayşe", "Ole")
_LAST = ("Müller", "Schmidt", "Weiß", "Öztürk", "Novák", "García", "Nguyen", "Fischer")
_PAYMENTS = ("card", "cash", "mobile")
_CAMPAIGNS = (
    # campaign_id, name, store, sku number, first day offset, days, discount %
    (1, "Autumn espresso week", "berlin", 1, 20, 10, 10),
    (2, "Strudel Sunday", "berlin", 9, 45, 7, 15),
    (3, "Matcha month", "berlin", 5, 60, 20, 5),
    (4, "Franzbrötchen fest", "munich", 7, 15, 10, 20),
    (5, "Chai days", "munich", 4, 40, 14, 10),
    (6, "Beans to go", "munich", 10, 70, 12, 25),
)


def _pick(options: tuple[str, ...], expr: str) -> str:
    items = ", ".join("'" + o.replace("'", "''") + "'" for o in options)
    return f"([{items}])[1 + (({expr}) % {len(options)})]"


def _rand(seed: int, salt: int, column: str = "i") -> str:
    """SQL for a deterministic pseudo-random integer in [0, 1000003) per row."""
    return f"CAST(hash({column}, {seed}, {salt}) % 1000003 AS BIGINT)"


def _unit(seed: int, salt: int) -> str:
    """SQL for a deterministic pseudo-random number in [0, 1) per row."""
    return f"({_rand(seed, salt)} / 1000003.0)"


def write_mesh_data(
    folder: Path, *, orders_per_store: int = 20_000, seed: int = 7
) -> dict[str, dict[str, Path]]:
    """Write each node's products as Parquet; give node -> product -> file."""
    _prepare(folder, orders_per_store)
    files = {
        "hq": {"catalogue": folder / "hq-catalogue.parquet"},
        "marketing": {"campaigns": folder / "marketing-campaigns.parquet"},
        **{store: {"orders": folder / f"{store}-orders.parquet"} for store in STORE_SHARE},
    }
    with trusted_connection() as con:
        con.execute(f"CREATE TEMP TABLE catalogue AS {_catalogue_sql(seed)}")
        con.execute(f"CREATE TEMP TABLE campaigns AS {_campaigns_sql()}")
        _copy(con, "SELECT * FROM catalogue ORDER BY sku", files["hq"]["catalogue"])
        _copy(con, "SELECT * FROM campaigns ORDER BY campaign_id", files["marketing"]["campaigns"])
        for index, (store, share) in enumerate(STORE_SHARE.items()):
            rows = max(1, round(orders_per_store * share))
            sql = _orders_sql(store, rows, seed + index, first_id=(index + 1) * 10**9)
            _copy(con, sql, files[store]["orders"])
    return files


def write_bench_orders(
    folder: Path, *, stores: Sequence[str], orders_per_store: int, seed: int = 7
) -> dict[str, Path]:
    """Write one `orders` file per store, `orders_per_store` rows each; give store -> file.

    The demo's orders schema, with order ids unique across the stores; campaigns apply only
    at the demo's stores.
    """
    _prepare(folder, orders_per_store)
    files = {store: folder / f"{store}-orders.parquet" for store in stores}
    with trusted_connection() as con:
        con.execute(f"CREATE TEMP TABLE catalogue AS {_catalogue_sql(seed)}")
        con.execute(f"CREATE TEMP TABLE campaigns AS {_campaigns_sql()}")
        for index, store in enumerate(stores):
            sql = _orders_sql(store, orders_per_store, seed + index, first_id=(index + 1) * 10**9)
            _copy(con, sql, files[store])
    return files


def _prepare(folder: Path, orders_per_store: int) -> None:
    if not isinstance(orders_per_store, int) or orders_per_store < 1:
        raise UsageError(f"orders per store must be a positive number, not {orders_per_store!r}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the demo data to {folder}: {exc.strerror}") from exc


def _copy(con: object, sql: str, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    target = str(partial).replace("'", "''")
    try:
        con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)")  # type: ignore[attr-defined]
        partial.replace(path)
    except (duckdb.IOException, OSError) as exc:
        raise UsageError(f"cannot write the demo data to {path.parent}: {exc}") from exc


def _catalogue_sql(seed: int) -> str:
    names = " UNION ALL ".join(
        f"SELECT {i} AS k, '{name.replace(chr(39), chr(39) * 2)}' AS base, '{category}' AS category"
        for i, (name, category) in enumerate(zip(_NAMES, _CATEGORIES, strict=True))
    )
    return f"""
        SELECT printf('SKU-%03d', i + 1) AS sku,
               n.base || CASE WHEN i < {len(_NAMES)} THEN ''
                              ELSE ' ' || (i // {len(_NAMES)} + 1) END AS name,
               n.category,
               CAST(round(2.2 + ({_rand(seed, 31)} % 1300) / 100.0, 2) AS DECIMAL(10, 2))
                   AS unit_price,
               DATE '2024-01-01' + CAST({_rand(seed, 32)} % 900 AS INTEGER) AS launched
        FROM range({_SKUS}) AS t(i)
        JOIN ({names}) AS n ON n.k = i % {len(_NAMES)}
    """


def _campaigns_sql() -> str:
    rows = " UNION ALL ".join(
        f"SELECT {cid} AS campaign_id, '{name}' AS name, '{store}' AS store, "
        f"printf('SKU-%03d', {sku}) AS sku, DATE '{FIRST_DAY}' + {start} AS starts, "
        f"DATE '{FIRST_DAY}' + {start + days - 1} AS ends, "
        f"CAST({discount} AS INTEGER) AS discount_pct"
        for cid, name, store, sku, start, days, discount in _CAMPAIGNS
    )
    return f"SELECT * FROM ({rows})"


def _orders_sql(store: str, rows: int, seed: int, first_id: int) -> str:
    """Orders of one store. A popular-first SKU pick (the square of a uniform number skews
    toward low SKU numbers); during a campaign at this store, a share of the orders buy the
    campaign's SKU at its discount."""
    return f"""
        WITH base AS (
            SELECT i,
                   {first_id} + i AS order_id,
                   1 + {_rand(seed, 1)} % 2500 AS customer_id,
                   TIMESTAMP '{FIRST_DAY}' + to_seconds(
                       CAST({_unit(seed, 2)} * {DAYS * 86400} AS BIGINT)) AS ordered_at,
                   printf('SKU-%03d',
                       1 + CAST(floor(power({_unit(seed, 3)}, 2) * {_SKUS}) AS INTEGER)
                   ) AS usual_sku,
                   1 + {_rand(seed, 4)} % 3 AS quantity,
                   {_unit(seed, 5)} AS pick,
                   {_pick(_PAYMENTS, _rand(seed, 6))} AS payment
            FROM range({rows}) AS t(i)
        ), placed AS (
            SELECT b.*, k.sku AS campaign_sku, k.discount_pct
            FROM base b
            LEFT JOIN campaigns k
              ON k.store = '{store}'
             AND CAST(b.ordered_at AS DATE) BETWEEN k.starts AND k.ends
        )
        SELECT p.order_id,
               p.customer_id,
               {_pick(_FIRST, "p.customer_id * 7")} || ' ' || {_pick(_LAST, "p.customer_id * 13")}
                   AS customer_name,
               c.sku,
               CAST(p.quantity AS INTEGER) AS quantity,
               CAST(round(p.quantity * c.unit_price
                   * CASE WHEN c.sku = p.campaign_sku THEN 1 - p.discount_pct / 100.0 ELSE 1 END,
                   2) AS DECIMAL(10, 2)) AS amount,
               p.ordered_at,
               p.payment
        FROM placed p
        JOIN catalogue c
          ON c.sku = CASE WHEN p.campaign_sku IS NOT NULL AND p.pick < {_CAMPAIGN_PICK}
                          THEN p.campaign_sku ELSE p.usual_sku END
        ORDER BY p.order_id
    """
