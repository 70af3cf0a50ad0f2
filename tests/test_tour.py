"""The demo's data (`shoal.meshdata`) and its guided tour (`shoal.tour`), checked centrally.

The tour's answers over a real mesh are checked by `shoal demo --check` in
tests/mesh/test_demo_and_readme.py; here the data is checked for what the tour relies on
(unique ids, consistent amounts, a real campaign effect) and the tour's queries for running,
answering something and fixing their order.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from shoal.engine import trusted_connection
from shoal.errors import UsageError
from shoal.meshdata import FIRST_DAY, MESH_NODES, STORE_SHARE, write_mesh_data
from shoal.tour import TOUR, Question, check_answers, expected_answers

ORDERS_SCHEMA = {
    "order_id": pa.int64(),
    "customer_id": pa.int64(),
    "customer_name": pa.string(),
    "sku": pa.string(),
    "quantity": pa.int32(),
    "amount": pa.decimal128(10, 2),
    "ordered_at": pa.timestamp("us"),
    "payment": pa.string(),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """The demo's data at its default size."""
    return write_mesh_data(tmp_path_factory.mktemp("mesh-data"))


@pytest.fixture(scope="module")
def answers(files: dict[str, dict[str, Path]]) -> dict[str, pa.Table]:
    return expected_answers(files)


def _read(files: dict[str, dict[str, Path]], node: str, product: str) -> pa.Table:
    return pq.read_table(files[node][product])


def _sql(files: dict[str, dict[str, Path]], sql: str) -> list[tuple[object, ...]]:
    """Run SQL over the files as DuckDB tables named `<node>_<product>`."""
    with trusted_connection() as con:
        for node, products in files.items():
            for product, path in products.items():
                con.register(f"{node}_{product}", pq.read_table(path))
        rows: list[tuple[object, ...]] = con.sql(sql).fetchall()
        return rows


# --- the data ----------------------------------------------------------------------------


def test_nodes_and_products(files):
    assert MESH_NODES[0][0] == "hq"
    assert {name for name, _ in MESH_NODES} == set(files)
    assert {node: set(products) for node, products in files.items()} == {
        "hq": {"catalogue"},
        "berlin": {"orders"},
        "munich": {"orders"},
        "marketing": {"campaigns"},
    }
    for products in files.values():
        for path in products.values():
            assert path.exists()
            assert not path.with_name(path.name + ".partial").exists()


def test_schemas(files):
    for store in STORE_SHARE:
        schema = _read(files, store, "orders").schema
        assert {f.name: f.type for f in schema} == ORDERS_SCHEMA
    catalogue = _read(files, "hq", "catalogue").schema
    assert catalogue.names == ["sku", "name", "category", "unit_price", "launched"]
    assert catalogue.field("launched").type == pa.date32()
    campaigns = _read(files, "marketing", "campaigns").schema
    assert campaigns.names == [
        "campaign_id",
        "name",
        "store",
        "sku",
        "starts",
        "ends",
        "discount_pct",
    ]
    assert campaigns.field("starts").type == pa.date32()


def test_same_seed_gives_the_same_files_and_another_seed_other_orders(files, tmp_path):
    again = write_mesh_data(tmp_path / "again")
    for node, products in files.items():
        for product, path in products.items():
            assert pq.read_table(again[node][product]).equals(pq.read_table(path)), (node, product)
    other = write_mesh_data(tmp_path / "other", seed=8)
    assert not pq.read_table(other["berlin"]["orders"]).equals(_read(files, "berlin", "orders"))


def test_order_ids_are_unique_across_the_mesh(files):
    ids = pa.chunked_array(
        [_read(files, store, "orders").column("order_id").combine_chunks() for store in STORE_SHARE]
    )
    assert len(ids) == pc.count_distinct(ids).as_py()
    assert pc.min(ids).as_py() >= 1


def test_store_sizes_differ(files):
    rows = {store: _read(files, store, "orders").num_rows for store in STORE_SHARE}
    assert rows["berlin"] == 20_000
    assert rows["munich"] < rows["berlin"]
    assert min(rows.values()) > 0


def test_values_are_plausible(files):
    first = datetime.fromisoformat(FIRST_DAY)
    catalogue = _read(files, "hq", "catalogue")
    skus = set(catalogue.column("sku").to_pylist())
    assert len(skus) == catalogue.num_rows
    assert pc.min(catalogue.column("unit_price")).as_py() > 0
    for store in STORE_SHARE:
        orders = _read(files, store, "orders")
        assert orders.column("customer_name").null_count == 0
        assert set(orders.column("sku").to_pylist()) <= skus
        assert pc.min(orders.column("quantity")).as_py() >= 1
        assert pc.min(orders.column("amount")).as_py() > 0
        assert set(orders.column("payment").to_pylist()) <= {"card", "cash", "mobile"}
        assert pc.min(orders.column("ordered_at")).as_py() >= first
        assert pc.max(orders.column("ordered_at")).as_py() < first + timedelta(days=91)
    names = " ".join(_read(files, "berlin", "orders").column("customer_name").to_pylist())
    for part in ("Müller", "Jürgen", "Zoë"):
        assert part in names


def test_a_customer_has_one_name_across_stores(files):
    (names_per_customer,) = _sql(
        files,
        "SELECT max(n) FROM (SELECT customer_id, count(DISTINCT customer_name) AS n FROM ("
        " SELECT customer_id, customer_name FROM berlin_orders UNION ALL"
        " SELECT customer_id, customer_name FROM munich_orders) GROUP BY customer_id)",
    )
    assert names_per_customer == (1,)


def test_amounts_are_unit_price_times_quantity_less_the_campaign_discount(files):
    for store in STORE_SHARE:
        rows = _sql(
            files,
            f"""
            SELECT o.order_id, o.amount, o.quantity * c.unit_price AS full_price,
                   max(k.discount_pct) AS discount
            FROM {store}_orders o
            JOIN hq_catalogue c USING (sku)
            LEFT JOIN marketing_campaigns k
              ON k.store = '{store}' AND k.sku = o.sku
             AND CAST(o.ordered_at AS DATE) BETWEEN k.starts AND k.ends
            GROUP BY ALL
            """,
        )
        discounted = 0
        for order_id, amount, full_price, discount in rows:
            factor = 1 - Decimal(discount or 0) / 100
            want = (full_price * factor).quantize(Decimal("0.01"))
            assert abs(amount - want) <= Decimal("0.01"), (store, order_id, amount, want)
            discounted += discount is not None
        assert discounted > 0, store


def test_some_skus_sell_far_more_than_others(files):
    units = [
        row[1]
        for row in _sql(
            files,
            "SELECT sku, sum(quantity) FROM (SELECT * FROM berlin_orders UNION ALL "
            "SELECT * FROM munich_orders) GROUP BY sku ORDER BY 2 DESC",
        )
    ]
    assert units[0] > 5 * units[len(units) // 2]


def test_campaigns_raise_their_skus_sales_at_their_store_while_they_run(files):
    campaigns = _read(files, "marketing", "campaigns").to_pylist()
    assert {c["store"] for c in campaigns} == set(STORE_SHARE)
    for campaign in campaigns:
        store, sku = campaign["store"], campaign["sku"]
        daily = dict(
            _sql(
                files,
                f"SELECT CAST(ordered_at AS DATE) AS day, "
                f"sum(quantity) FILTER (WHERE sku = '{sku}') FROM {store}_orders GROUP BY 1",
            )
        )
        during = [u or 0 for d, u in daily.items() if campaign["starts"] <= d <= campaign["ends"]]
        outside = [
            u or 0 for d, u in daily.items() if not campaign["starts"] <= d <= campaign["ends"]
        ]
        assert during and outside
        assert sum(during) / len(during) > 1.2 * sum(outside) / len(outside), campaign["name"]


def test_two_hundred_thousand_orders_per_store_stream(tmp_path):
    """Peak memory grows far less than the rows would take as Python objects (~400 MiB)."""
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from shoal.meshdata import write_mesh_data\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "write_mesh_data(Path(sys.argv[1]), orders_per_store=200_000)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(done.stdout.strip()) < 300
    rows = {
        store: pq.read_metadata(tmp_path / f"{store}-orders.parquet").num_rows
        for store in STORE_SHARE
    }
    assert rows == {store: round(200_000 * share) for store, share in STORE_SHARE.items()}


@pytest.mark.parametrize("orders", [0, -5, 2.5, "100"])
def test_orders_per_store_must_be_a_positive_number(tmp_path, orders):
    with pytest.raises(UsageError, match="orders per store must be a positive number"):
        write_mesh_data(tmp_path / "data", orders_per_store=orders)
    assert not (tmp_path / "data").exists()


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="cannot write the demo data to"):
        write_mesh_data(blocker / "data", orders_per_store=10)
    with pytest.raises(UsageError, match="cannot write the demo data to"):
        write_mesh_data(blocker, orders_per_store=10)


def test_one_order_per_store_is_enough(tmp_path):
    files = write_mesh_data(tmp_path, orders_per_store=1)
    assert [pq.read_metadata(files[s]["orders"]).num_rows for s in STORE_SHARE] == [1, 1]
    assert set(expected_answers(files)) == {q.title for q in TOUR}


# --- the tour ----------------------------------------------------------------------------


def test_the_tour_is_four_to_six_distinct_questions():
    assert 4 <= len(TOUR) <= 6
    assert len({q.title for q in TOUR}) == len(TOUR)
    for question in TOUR:
        assert question.why.strip() and question.sql.strip()
        if question.ordered:
            assert "ORDER BY" in question.sql
    with pytest.raises(FrozenInstanceError):
        TOUR[0].title = "x"  # type: ignore[misc]


def test_the_tour_asks_across_nodes():
    text = " ".join(q.sql for q in TOUR)
    for name in ("FROM orders", "hq.catalogue", "marketing.campaigns", "_node"):
        assert name in text


def test_every_question_answers_something(answers):
    assert list(answers) == [q.title for q in TOUR]
    for title, table in answers.items():
        assert table.num_rows > 0, title


def test_revenue_by_store_adds_up_every_order(files, answers):
    table = answers["Revenue by store"].to_pylist()
    assert [row["store"] for row in table] == sorted(STORE_SHARE)
    for row in table:
        orders = _read(files, row["store"], "orders")
        assert row["orders"] == orders.num_rows
        assert row["revenue"] == pc.sum(orders.column("amount")).as_py()


def test_campaign_uplift_shows_the_effect(answers):
    rows = answers["Campaign uplift"].to_pylist()
    assert len(rows) == 6
    for row in rows:
        assert row["daily_units_during"] > row["daily_units_outside"], row
        assert row["uplift"] > 1.2, row


def test_ordered_answers_do_not_depend_on_how_rows_are_stored(files, answers, tmp_path):
    """Ties are broken: the same rows written in another order give the same ordered rows."""
    shuffled: dict[str, dict[str, Path]] = {}
    for node, products in files.items():
        shuffled[node] = {}
        for product, path in products.items():
            table = pq.read_table(path)
            keys = pa.array([(i * 7919) % 10007 for i in range(table.num_rows)])
            order = pc.sort_indices(keys, sort_keys=[("", "descending")])
            target = tmp_path / path.name
            pq.write_table(table.take(order), target, row_group_size=997)
            shuffled[node][product] = target
    assert check_answers(answers, expected_answers(shuffled)) == [f"{q.title}: ok" for q in TOUR]


def test_check_answers_accepts_identical_answers(answers):
    copies = {title: pa.Table.from_pylist(t.to_pylist(), t.schema) for title, t in answers.items()}
    assert check_answers(answers, copies) == [f"{q.title}: ok" for q in TOUR]


def test_check_answers_names_what_differs(answers):
    revenue = answers["Revenue by store"]
    amounts = revenue.column("revenue").to_pylist()
    amounts[0] += Decimal("0.01")
    changed = revenue.set_column(
        revenue.schema.get_field_index("revenue"),
        "revenue",
        pa.array(amounts, revenue.schema.field("revenue").type),
    )
    best = answers["Best sellers across the chain"]
    actual = dict(answers)
    actual["Revenue by store"] = changed
    actual["Best sellers across the chain"] = best.slice(0, best.num_rows - 1)
    del actual["Campaign uplift"]
    report = dict(line.split(": ", 1) for line in check_answers(answers, actual))
    assert report["Revenue by store"].startswith("row 0 differs")
    assert report["Best sellers across the chain"].startswith("row counts differ")
    assert report["Campaign uplift"] == "no answer"
    assert report["Category share at each store"] == "ok"


def test_check_answers_compares_ordered_answers_row_by_row(answers):
    title = "Revenue by store"
    reversed_rows = answers[title].take(list(range(answers[title].num_rows))[::-1])
    report = check_answers(answers, {**answers, title: reversed_rows})
    assert report[0].startswith(f"{title}: row 0 differs")


def test_check_answers_without_an_expected_answer():
    assert check_answers({}, {}) == [f"{q.title}: no answer" for q in TOUR]
    missing = {q.title: pa.table({"x": [1]}) for q in TOUR}
    assert check_answers({}, missing) == [f"{q.title}: no expected answer" for q in TOUR]


def test_question_is_a_plain_value():
    question = Question("t", "SELECT 1", ordered=False, why="because")
    assert question == Question("t", "SELECT 1", False, "because")
