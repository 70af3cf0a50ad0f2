"""The publish pipeline: modes, versions, contract checks, and failures that write nothing."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from shoal.contracts import dump_contract, load_contract
from shoal.errors import ConflictError, ContractViolation, NotFoundError, SourceError, UsageError
from shoal.node import Node
from tests.conftest import tree_snapshot

ORDERS = {
    "order_id": [1, 2, 3, 4],
    "store": ["berlin", "berlin", "paris", "rome"],
    "amount": [10.5, 20.0, 7.25, 3.0],
    "note": ["a", None, "c", "d"],
}


def rows(node: Node, sql: str) -> list[dict]:
    return node.sql(sql).read_all().to_pylist()


def test_first_publish_infers_a_draft_contract_and_makes_version_1(node, write_parquet):
    result = node.publish("orders", str(write_parquet(ORDERS)))
    assert (result.version, result.rows_added, result.rows_total) == (1, 4, 4)
    assert result.contract_inferred
    contract = node.contract("orders")
    assert contract.status == "draft"
    required = {c["name"]: c["required"] for c in contract.columns_summary()}
    assert required == {"order_id": True, "store": True, "amount": True, "note": False}
    assert rows(node, "SELECT sum(amount) AS s FROM berlin.orders") == [{"s": 40.75}]


def test_each_publish_is_exactly_one_version(node, write_parquet):
    path = str(write_parquet(ORDERS))
    for expected in (1, 2, 3):
        assert node.publish("orders", path).version == expected
    history = node.history("orders")
    assert [v.version for v in history] == [1, 2, 3]
    assert [v.rows_added for v in history] == [4, 4, 4]
    assert node.describe("orders").rows == 12


def test_overwrite_replaces_everything(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    small = {k: v[:1] for k, v in ORDERS.items()}
    result = node.publish("orders", str(write_parquet(small)), mode="overwrite")
    assert (result.rows_added, result.rows_removed, result.rows_total) == (1, 4, 1)
    assert node.history("orders")[-1].mode == "overwrite"


def test_upsert_replaces_matching_keys_and_adds_the_rest(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    change = {
        "order_id": [2, 9],
        "store": ["berlin", "oslo"],
        "amount": [99.0, 1.0],
        "note": ["changed", "new"],
    }
    result = node.publish("orders", str(write_parquet(change)), mode="upsert", key=["order_id"])
    assert result.version == 2
    assert result.rows_total == 5
    got = rows(node, "SELECT order_id, amount FROM orders ORDER BY order_id")
    assert got == [
        {"order_id": 1, "amount": 10.5},
        {"order_id": 2, "amount": 99.0},
        {"order_id": 3, "amount": 7.25},
        {"order_id": 4, "amount": 3.0},
        {"order_id": 9, "amount": 1.0},
    ]


def test_upsert_needs_a_key(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    with pytest.raises(UsageError, match="--key"):
        node.publish("orders", str(write_parquet(ORDERS)), mode="upsert")


def test_upsert_uses_the_contract_primary_key(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    text = node.contract_text("orders").replace("version: 1.0.0", "version: 2.0.0", 1)
    contract = load_contract(text)
    path = tmp_path / "c.yaml"
    path.write_text(_with_primary_key(dump_contract(contract), "order_id"))
    node.set_contract("orders", path)
    change = {"order_id": [1], "store": ["x"], "amount": [0.0], "note": [None]}
    result = node.publish("orders", str(write_parquet(change)), mode="upsert")
    assert result.rows_total == 4
    assert rows(node, "SELECT store FROM orders WHERE order_id = 1") == [{"store": "x"}]


def test_upsert_with_duplicate_keys_in_new_data_writes_nothing(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    before = tree_snapshot(node.home.root)
    dup = {"order_id": [5, 5], "store": ["a", "b"], "amount": [1.0, 2.0], "note": ["x", "y"]}
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(dup)), mode="upsert", key=["order_id"])
    assert info.value.failures[0].count == 2
    assert tree_snapshot(node.home.root) == before


def test_violations_write_nothing_and_report_counts_and_samples(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    before = tree_snapshot(node.home.root)
    bad = {
        "order_id": [5, 6, 7],
        "store": [None, None, "x"],  # store is required (no nulls were seen)
        "amount": [1.0, 2.0, 3.0],
        "note": ["a", "b", "c"],
    }
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(bad)))
    failure = next(f for f in info.value.failures if f.rule == "required")
    assert (failure.column, failure.count) == ("store", 2)
    assert len(failure.samples) in range(1, 6)
    assert info.value.exit_code == 3
    assert tree_snapshot(node.home.root) == before
    assert node.describe("orders").version == 1
    assert not list((node.home.root / "tmp").iterdir())


def test_type_violations_are_counted_over_every_batch(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    n = 200_000
    amounts = pa.array(["1.5" if i % 1000 else "not a number" for i in range(n)])
    data = pa.table(
        {
            "order_id": pa.array(range(n), pa.int64()),
            "store": pa.array(["s"] * n),
            "amount": amounts,
            "note": pa.array(["n"] * n),
        }
    )
    before = tree_snapshot(node.home.root)
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(data)))
    failure = next(f for f in info.value.failures if f.rule == "type")
    assert failure.column == "amount"
    assert failure.count == n // 1000
    assert tree_snapshot(node.home.root) == before


def test_missing_and_unexpected_columns_are_refused(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    changed = {k: v for k, v in ORDERS.items() if k != "amount"} | {"extra": [1, 2, 3, 4]}
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(changed)))
    rules = {(f.rule, f.column) for f in info.value.failures}
    assert ("missing column", "amount") in rules
    assert ("unexpected column", "extra") in rules


def test_failed_first_publish_leaves_no_product(node, write_parquet, tmp_path):
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT_WITH_RULES)
    bad = dict(ORDERS) | {"store": ["berlin", "nowhere", "paris", "rome"]}
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(bad)), contract_file=contract)
    assert [f.rule for f in info.value.failures] == ["enum"]
    assert info.value.failures[0].samples[0]["store"] == "nowhere"
    assert node.products.names() == []
    assert not (node.home.products_dir / "orders").exists()


def test_contract_file_rules_are_checked(node, write_parquet, tmp_path):
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT_WITH_RULES)
    result = node.publish("orders", str(write_parquet(ORDERS)), contract_file=contract)
    assert not result.contract_inferred
    assert node.contract("orders").version == "1.0.0"
    assert node.contract("orders").status == "active"
    more = {"order_id": [10], "store": ["oslo"], "amount": [0.0], "note": [None]}
    again = node.publish("orders", str(write_parquet(more)), contract_file=contract)
    assert (again.version, again.rows_total) == (2, 5)


def test_unique_is_checked_across_the_whole_product(node, write_parquet, tmp_path):
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT_WITH_RULES)
    node.publish("orders", str(write_parquet(ORDERS)), contract_file=contract)
    before = tree_snapshot(node.home.root)
    again = {k: v[:2] for k, v in ORDERS.items()}
    with pytest.raises(ContractViolation) as info:
        node.publish("orders", str(write_parquet(again)))
    assert {f.rule for f in info.value.failures} >= {"primaryKey"}
    assert tree_snapshot(node.home.root) == before


@pytest.mark.parametrize("name", ["", "Sales", "a.b.c", "../x", "a/b", "..", "x" * 64, "a-b"])
def test_bad_product_names_are_refused_before_any_io(node, name, tmp_path):
    before = tree_snapshot(node.home.root)
    with pytest.raises(UsageError, match="product name"):
        node.publish(name, str(tmp_path / "does-not-exist.csv"))
    assert tree_snapshot(node.home.root) == before


def test_unknown_mode_is_refused(node, write_parquet):
    with pytest.raises(UsageError, match="mode"):
        node.publish("orders", str(write_parquet(ORDERS)), mode="merge")


def test_missing_source_is_a_clear_error(node, tmp_path):
    with pytest.raises(SourceError):
        node.publish("orders", str(tmp_path / "nope.csv"))
    assert node.products.names() == []


def test_second_writer_is_refused_while_one_publishes(node, write_parquet):
    path = str(write_parquet(ORDERS))
    node.publish("orders", path)
    started = threading.Event()
    release = threading.Event()

    def slow_progress(_rows: int) -> None:
        started.set()
        release.wait(10)

    worker = threading.Thread(target=lambda: node.publish("orders", path, progress=slow_progress))
    worker.start()
    try:
        assert started.wait(10)
        with pytest.raises(ConflictError):
            Node.open(node.home.root).publish("orders", path)
    finally:
        release.set()
        worker.join()
    assert node.describe("orders").version == 2


def test_leftover_scratch_of_a_dead_publish_is_swept_on_open(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    leftover = node.home.new_tmp_dir("publish-orders-")
    (leftover / "part-0.parquet").write_bytes(b"half")
    Node.open(node.home.root)
    assert not leftover.exists()


def test_pending_contract_of_a_crashed_publish_is_dropped(node, write_parquet):
    node.publish("orders", str(write_parquet(ORDERS)))
    before = node.contract_text("orders")
    pending = node.products.contract_path("orders").with_suffix(".yaml.next")
    pending.write_text(before.replace("draft", "active"))
    node.publish("orders", str(write_parquet(ORDERS)))
    assert not pending.exists()
    assert node.contract_text("orders") == before


def test_set_contract_refuses_breaking_change_without_major_bump(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    text = node.contract_text("orders")
    removed = _drop_property(text, "note")
    path = tmp_path / "new.yaml"
    path.write_text(removed)
    with pytest.raises(ConflictError):
        node.set_contract("orders", path)
    assert node.contract_text("orders") == text
    path.write_text(removed.replace("version: 1.0.0", "version: 2.0.0", 1))
    with pytest.raises(ConflictError, match="drops"):
        node.set_contract("orders", path)  # the current data still has the column
    assert node.contract_text("orders") == text
    small = {k: v for k, v in ORDERS.items() if k != "note"}
    result = node.publish("orders", str(write_parquet(small)), mode="overwrite", contract_file=path)
    assert result.contract_version == "2.0.0"
    assert rows(node, "SELECT * FROM orders LIMIT 1")[0].keys() == small.keys()


def test_set_contract_must_fit_current_data(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    text = node.contract_text("orders")
    stricter = text.replace("version: 1.0.0", "version: 2.0.0", 1)
    stricter = _set_required(stricter, "note")
    path = tmp_path / "new.yaml"
    path.write_text(stricter)
    with pytest.raises(ContractViolation) as info:
        node.set_contract("orders", path)
    assert info.value.failures[0].rule == "required"
    assert node.contract_text("orders") == text


def test_describe_unknown_product_is_not_found(node):
    with pytest.raises(NotFoundError):
        node.describe("nothing")


def test_sql_matches_duckdb_on_the_same_data(node, write_parquet):
    import duckdb

    table = pa.table(ORDERS)
    node.publish("orders", str(write_parquet(table)))
    query = (
        "SELECT store, count(*) AS n, sum(amount) AS total FROM {} GROUP BY store ORDER BY store"
    )
    got = node.sql(query.format("berlin.orders")).read_all().to_pylist()
    con = duckdb.connect()
    con.register("oracle", table)
    want = con.sql(query.format("oracle")).to_arrow_table().to_pylist()
    assert got == want


CONTRACT_WITH_RULES = """\
apiVersion: v3.1.0
kind: DataContract
id: urn:shoal:berlin:orders
name: orders
version: 1.0.0
status: active
schema:
  - name: orders
    logicalType: object
    properties:
      - name: order_id
        logicalType: integer
        physicalType: int64
        required: true
        primaryKey: true
        primaryKeyPosition: 1
      - name: store
        logicalType: string
        required: true
        logicalTypeOptions:
          enum: [berlin, paris, rome, oslo]
      - name: amount
        logicalType: number
        logicalTypeOptions:
          minimum: 0
      - name: note
        logicalType: string
    quality:
      - metric: rowCount
        mustBeGreaterThan: 0
"""


def _drop_property(text: str, name: str) -> str:
    contract = load_contract(text)
    data = contract.model_dump(by_alias=True, exclude_none=True)
    for obj in data["schema"]:
        obj["properties"] = [p for p in obj["properties"] if p["name"] != name]
    return dump_contract(type(contract).model_validate(data))


def _set_required(text: str, name: str) -> str:
    contract = load_contract(text)
    data = contract.model_dump(by_alias=True, exclude_none=True)
    for obj in data["schema"]:
        for prop in obj["properties"]:
            if prop["name"] == name:
                prop["required"] = True
    return dump_contract(type(contract).model_validate(data))


def _with_primary_key(text: str, name: str) -> str:
    contract = load_contract(text)
    data = contract.model_dump(by_alias=True, exclude_none=True)
    for obj in data["schema"]:
        for prop in obj["properties"]:
            if prop["name"] == name:
                prop["primaryKey"] = True
                prop["primaryKeyPosition"] = 1
    return dump_contract(type(contract).model_validate(data))


def test_set_contract_may_add_an_optional_column(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    contract = load_contract(node.contract_text("orders"))
    data = contract.model_dump(by_alias=True, exclude_none=True)
    data["schema"][0]["properties"].append(
        {"name": "channel", "logicalType": "string", "physicalType": "string"}
    )
    path = tmp_path / "more.yaml"
    path.write_text(dump_contract(type(contract).model_validate(data)))
    node.set_contract("orders", path)
    more = dict(ORDERS) | {"channel": ["web", "shop", "web", None]}
    result = node.publish("orders", str(write_parquet(more)))
    assert result.rows_total == 8
    got = rows(node, "SELECT count(channel) AS n FROM orders")
    assert got == [{"n": 3}]


def test_set_contract_adding_a_required_column_fails_on_current_rows(node, write_parquet, tmp_path):
    node.publish("orders", str(write_parquet(ORDERS)))
    contract = load_contract(node.contract_text("orders"))
    data = contract.model_dump(by_alias=True, exclude_none=True)
    data["version"] = "2.0.0"
    data["schema"][0]["properties"].append(
        {"name": "channel", "logicalType": "string", "required": True}
    )
    path = tmp_path / "more.yaml"
    path.write_text(dump_contract(type(contract).model_validate(data)))
    with pytest.raises(ContractViolation) as info:
        node.set_contract("orders", path)
    assert [(f.rule, f.column, f.count) for f in info.value.failures] == [
        ("required", "channel", 4)
    ]


def test_first_publish_of_a_header_only_file_marks_nothing_required(node, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("order_id,store\n")
    result = node.publish("orders", str(path))
    assert result.rows_total == 0
    assert not any(c["required"] for c in node.contract("orders").columns_summary())
