"""Policies enforced where the data lives: masks, denied columns and row filters hold for
every query shape, on real node homes (the node's own SQL and its federated path)."""

from __future__ import annotations

import gc
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from shoal import audit
from shoal.errors import LockdownError, RefusedError, ShoalError, UsageError
from shoal.mesh.invites import Invites
from shoal.node import Node
from shoal.policy import Principal, ProductPolicy, load_policy, parse_rules

EMAILS = ["ann@shop.de", "bob@shop.de", "cem@example.com", "dora@example.com"]
SSNS = ["111-22-3333", "222-33-4444", "333-44-5555", "444-55-6666"]
CONTRACT = {
    "apiVersion": "v3.1.0",
    "kind": "DataContract",
    "id": "urn:test:customers",
    "name": "customers",
    "version": "1.0.0",
    "status": "active",
    "schema": [
        {
            "name": "customers",
            "logicalType": "object",
            "properties": [
                {"name": "id", "logicalType": "integer", "physicalType": "int64"},
                {"name": "email", "logicalType": "string", "physicalType": "string", "pii": True},
                {
                    "name": "ssn",
                    "logicalType": "string",
                    "physicalType": "string",
                    "classification": "restricted",
                },
                {
                    "name": "salary",
                    "logicalType": "number",
                    "physicalType": "float64",
                    "classification": "confidential",
                },
                {"name": "region", "logicalType": "string", "physicalType": "string"},
            ],
        }
    ],
}
ANALYST = Principal("user:eve", "analyst", "", {"region": "eu"})
OTHER = Principal("user:oz", "analyst", "", {"region": "us"})


@pytest.fixture
def shop(tmp_path) -> Node:
    node = Node.init(tmp_path / "shop", "shop", "eu-de")
    node.membership.found()
    data = tmp_path / "customers.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1, 2, 3, 4], pa.int64()),
                "email": EMAILS,
                "ssn": SSNS,
                "salary": [50_000.0, 61_000.0, 72_000.0, 83_000.0],
                "region": ["eu", "eu", "us", "us"],
            }
        ),
        data,
    )
    contract = tmp_path / "contract.yaml"
    contract.write_text(yaml.safe_dump(CONTRACT))
    node.publish("customers", str(data), contract_file=contract)
    node.set_policy(
        "customers",
        ProductPolicy.model_validate(
            {"row_filters": [{"roles": ["analyst"], "where": "region = :region"}]}
        ),
    )
    return node


def _rows(node: Node, sql: str, who: Principal | None = ANALYST, federated: bool = False):
    if federated:
        return node.query(sql, principal=who).read_all().to_pylist()
    return node.sql(sql, principal=who).read_all().to_pylist()


def _text(rows) -> str:
    return json.dumps(rows, default=str)


def _assert_hidden(text: str) -> None:
    for secret in [*EMAILS, *SSNS, "cem", "dora", "72000", "83000", "50000"]:
        assert secret not in text, f"{secret!r} leaked: {text[:300]}"


def test_owner_sees_everything_and_an_analyst_the_policy_view(shop):
    raw = _rows(shop, "SELECT * FROM customers ORDER BY id", who=None)
    assert [r["email"] for r in raw] == EMAILS
    seen = _rows(shop, "SELECT * FROM customers ORDER BY id")
    assert [r["id"] for r in seen] == [1, 2]  # only the analyst's region
    assert {r["salary"] for r in seen} == {None}  # confidential: read as NULL
    assert all(len(r["email"]) == 64 and len(r["ssn"]) == 64 for r in seen)  # hashed
    _assert_hidden(_text(seen))


BYPASSES = [
    "SELECT email FROM customers",
    "SELECT * FROM (SELECT * FROM customers) AS s",
    "WITH c AS (SELECT * FROM customers) SELECT * FROM c",
    "SELECT a.email, b.ssn FROM customers a JOIN customers b ON a.id = b.id",
    "SELECT email FROM customers UNION ALL SELECT ssn FROM customers",
    "SELECT lag(email) OVER (ORDER BY id) AS e, lead(ssn) OVER (ORDER BY id) AS s FROM customers",
    "SELECT email, count(*) AS n FROM customers GROUP BY email",
    "SELECT id FROM customers ORDER BY email",
    "SELECT min(email) AS a, max(ssn) AS b, min(id) AS c, max(id) AS d FROM customers",
    "SELECT count(*) AS n FROM customers WHERE region = 'us'",
    "SELECT count(*) AS n FROM customers WHERE email = 'cem@example.com'",
    "SELECT id FROM customers WHERE email LIKE 'ann%'",
    "SELECT string_agg(email, ',') AS s FROM customers",
    "SELECT list(ssn) AS s FROM shop.customers",
    "EXPLAIN SELECT * FROM customers WHERE email = 'x'",
]


@pytest.mark.parametrize("federated", [False, True], ids=["node", "federated"])
@pytest.mark.parametrize("sql", BYPASSES)
def test_no_query_shape_reaches_a_masked_value_or_filtered_row(shop, sql, federated):
    if federated and sql.startswith("EXPLAIN"):
        with pytest.raises(UsageError, match="shoal explain"):  # the mesh plan is elsewhere
            _rows(shop, sql, federated=True)
        return
    rows = _rows(shop, sql, federated=federated)
    _assert_hidden(_text(rows))
    if "region = 'us'" in sql:
        assert rows == [{"n": 0}]
    if "WHERE email = 'cem" in sql:
        assert rows == [{"n": 0}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT CAST(email AS INTEGER) FROM customers",
        "SELECT CAST(ssn AS DATE) FROM customers",
        "SELECT error(email) FROM customers",
    ],
)
def test_errors_never_echo_a_hidden_value(shop, sql):
    with pytest.raises(ShoalError) as info:
        _rows(shop, sql)
    _assert_hidden(info.value.message)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM __shoal_source_0",
        "SELECT * FROM duckdb_views()",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM query_table('__shoal_source_0')",
        "SELECT * FROM query('SELECT * FROM __shoal_source_0')",
        "SELECT * FROM memory.main.customers",
        "SELECT * FROM shop.nothing",
    ],
)
def test_the_table_behind_the_view_cannot_be_named(shop, sql):
    with pytest.raises((LockdownError, UsageError, ShoalError)) as info:
        _rows(shop, sql)
    _assert_hidden(info.value.message)


def test_attributes_decide_rows_and_a_missing_attribute_shows_none(shop):
    assert [r["id"] for r in _rows(shop, "SELECT id FROM customers ORDER BY id", OTHER)] == [3, 4]
    nobody = Principal("user:x", "analyst")
    assert _rows(shop, "SELECT id FROM customers", nobody) == []


def test_grants_open_confidential_columns_and_revoke_closes_them(shop):
    shop.grant("analyst", "customers", ["salary"])
    seen = _rows(shop, "SELECT id, salary FROM customers ORDER BY id")
    assert seen == [{"id": 1, "salary": 50_000.0}, {"id": 2, "salary": 61_000.0}]
    shop.revoke_grant("analyst", "customers")
    assert {r["salary"] for r in _rows(shop, "SELECT salary FROM customers")} == {None}


def test_readers_limit_who_reads_at_all(shop):
    shop.set_policy("customers", ProductPolicy(readers=["auditor"]))
    with pytest.raises(RefusedError, match="may not read"):
        _rows(shop, "SELECT id FROM customers")
    auditor = Principal("user:al", "auditor")
    assert len(_rows(shop, "SELECT id FROM customers", auditor)) == 4


@pytest.mark.parametrize(
    ("method", "check"),
    [
        ("redact", lambda v: v == "[redacted]"),
        ("null", lambda v: v is None),
        ("partial", lambda v: v.startswith("***@")),
    ],
)
def test_mask_methods(shop, method, check):
    shop.set_policy(
        "customers",
        ProductPolicy.model_validate({"columns": {"email": {"action": "mask", "method": method}}}),
    )
    rows = _rows(shop, "SELECT email FROM customers")
    assert rows and all(check(r["email"]) for r in rows)
    if method == "partial":
        assert {r["email"] for r in rows} == {"***@shop.de", "***@example.com"}


def test_hashes_are_stable_so_joins_on_masked_keys_work(shop):
    first = _rows(shop, "SELECT email FROM customers ORDER BY id")
    again = _rows(shop, "SELECT email FROM customers ORDER BY id")
    assert first == again


def test_a_cached_answer_is_never_given_to_another_person(shop):
    sql = "SELECT email FROM customers ORDER BY id"
    raw = _rows(shop, sql, who=None, federated=True)
    assert [r["email"] for r in raw] == EMAILS
    masked = _rows(shop, sql, federated=True)
    _assert_hidden(_text(masked))
    # And the other way round: the analyst's answer is not the owner's.
    assert _rows(shop, sql, who=None, federated=True) == raw


def _reads(node: Node) -> list[dict]:
    return [e for e in audit.read(node.home) if e["action"] == "read"]


def test_an_answer_from_the_cache_is_recorded_as_a_read(shop):
    sql = "SELECT id, email FROM customers ORDER BY id"
    first = _rows(shop, sql, federated=True)
    served = _reads(shop)
    assert [e["detail"].get("cached") for e in served] == [None]  # run at the data
    # The same statement again: the whole answer comes from the cache, and says so.
    assert _rows(shop, sql, federated=True) == first
    again = _reads(shop)[len(served) :]
    assert [(e["who"], e["product"]) for e in again] == [("user:eve", "shop.customers")]
    assert again[0]["detail"] | {"fragment": "-"} == {
        "columns": ["id", "email"],
        "rows": 2,
        "fragment": "-",
        "cached": "answer",
    }
    # Planned and run again (explain --analyze): the fragment comes from the cache, and the
    # line names the node whose read filled it, and the same fragment hash as that read.
    before = len(_reads(shop))
    shop.analyze(sql, principal=ANALYST)
    (line,) = _reads(shop)[before:]
    assert line["detail"]["cached"] == "fragment" and line["detail"]["from_node"] == "shop"
    assert line["detail"]["fragment"] == served[0]["detail"]["fragment"]
    assert line["detail"]["rows"] == 2 and line["who"] == "user:eve"
    # A statement that reads no product leaves no read line, cached or not.
    before = len(_reads(shop))
    for _ in range(2):
        _rows(shop, "SELECT 1 AS one", federated=True)
    assert len(_reads(shop)) == before


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"columns": {"nope": {"action": "deny"}}}, "does not have"),
        ({"columns": {"email": {"action": "shred"}}}, "columns.email.action"),
        ({"row_filters": [{"roles": ["analyst"], "where": "no_such_column = 1"}]}, "does not work"),
        ({"row_filters": [{"roles": ["analyst"], "where": "1=1; DROP TABLE x"}]}, "one SQL"),
        ({"row_filters": [{"roles": ["analyst"], "where": "1=1 -- x"}]}, "one SQL"),
        ({"readers": ["Bad Role"]}, "invalid role"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_policies_are_refused_and_change_nothing(shop, tmp_path, policy, message):
    before = shop.policy("customers")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(UsageError, match=message):
        shop.set_policy("customers", load_policy(path))
    assert shop.policy("customers") == before


def test_policy_files_that_are_not_yaml_or_too_big(shop, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe not text")
    with pytest.raises(UsageError, match="not YAML"):
        load_policy(bad)
    big = tmp_path / "big.yaml"
    big.write_text("readers: [" + ", ".join(["analyst"] * 60_000) + "]")
    with pytest.raises(UsageError, match="larger than"):
        load_policy(big)


def test_the_audit_log_is_a_product_for_its_owner_and_auditors_only(shop):
    _rows(shop, "SELECT count(*) AS n FROM customers", federated=True)
    owner = _rows(shop, "SELECT action, who FROM shop._audit ORDER BY seq", who=None)
    actions = [r["action"] for r in owner]
    assert "publish" in actions and "policy" in actions and "read" in actions
    assert any(r["who"] == "user:eve" for r in owner if r["action"] == "read")
    auditor = Principal("user:al", "auditor")
    assert _rows(shop, "SELECT count(*) AS n FROM shop._audit", auditor, federated=True)
    with pytest.raises(RefusedError, match="audit log"):
        _rows(shop, "SELECT count(*) AS n FROM shop._audit", federated=True)
    refusals = _rows(shop, "SELECT who FROM shop._audit WHERE action = 'refuse'", who=None)
    assert {"who": "user:eve"} in refusals


# -- mesh-wide rules ------------------------------------------------------------------------
def _set_rules(node: Node, text: str) -> None:
    node.membership.set_rules(parse_rules(text.encode(), "test"))


def test_mesh_rules_are_a_floor_no_product_policy_goes_below(shop):
    open_all = {
        "columns": {"email": {"action": "allow"}, "ssn": {"action": "allow"}},
        "grants": {"analyst": []},
    }
    shop.set_policy("customers", ProductPolicy.model_validate(open_all))
    seen = _rows(shop, "SELECT email, ssn, salary FROM customers ORDER BY id")
    assert [r["email"] for r in seen] == EMAILS and [r["ssn"] for r in seen] == SSNS
    # The hub's floors win over the product's policy, for every shape of query.
    _set_rules(shop, "floors: {pii: mask, restricted: deny, confidential: mask}")
    for federated in (False, True):
        seen = _rows(shop, "SELECT email, ssn, salary FROM customers", federated=federated)
        assert all(len(r["email"]) == 64 for r in seen)
        assert {r["ssn"] for r in seen} == {None}
        assert all(isinstance(r["salary"], str) and len(r["salary"]) == 64 for r in seen)
        _assert_hidden(_text(seen))
        _assert_hidden(_text(_rows(shop, "SELECT max(ssn), min(email) FROM customers")))
    # The owner's people and admins still see everything.
    admin = Principal("user:ada", "admin")
    assert [
        r["ssn"] for r in _rows(shop, "SELECT ssn FROM customers ORDER BY id", who=admin)
    ] == SSNS
    # Lifting the rules lifts the floor: cached views and answers do not outlive them.
    _set_rules(shop, "{}")
    seen = _rows(shop, "SELECT ssn FROM customers ORDER BY id")
    assert [r["ssn"] for r in seen] == SSNS


def test_mesh_rules_limit_who_reads_at_all(shop):
    _set_rules(shop, "readers: [auditor]")
    with pytest.raises(RefusedError, match="mesh's rules let role 'analyst' read no product"):
        _rows(shop, "SELECT id FROM customers")
    auditor = Principal("user:al", "auditor", "", {"region": "eu"})
    assert len(_rows(shop, "SELECT id FROM customers", who=auditor)) == 4
    assert len(_rows(shop, "SELECT id FROM customers", who=None)) == 4  # the owner


def test_a_policy_below_the_rules_is_refused_and_nothing_written(shop):
    _set_rules(shop, "floors: {restricted: mask}\nreaders: [analyst, auditor]")
    before = shop.policy("customers")
    with pytest.raises(RefusedError, match="column 'ssn'"):
        shop.set_policy(
            "customers", ProductPolicy.model_validate({"columns": {"ssn": {"action": "allow"}}})
        )
    with pytest.raises(RefusedError, match="role 'partner'"):
        shop.grant("partner", "customers")
    assert shop.policy("customers") == before
    # Within the rules: accepted.
    stricter = {"columns": {"ssn": {"action": "deny"}}, "readers": ["analyst"]}
    shop.set_policy("customers", ProductPolicy.model_validate(stricter))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("floors: {restricted: allow}", "floors"),
        ("floors: {secret: mask}", "floors"),
        ("readers: [Not A Role]", "invalid role"),
        ("colour: blue", "colour"),
        ("floors: [", "not YAML"),
        ("x" * 300_000, "larger than"),
        ("\xff\xfe", "not YAML"),
    ],
)
def test_bad_rules_are_refused(text, words):
    with pytest.raises(UsageError, match=words):
        parse_rules(text.encode("latin-1") if text == "\xff\xfe" else text.encode(), "test")


def test_rules_travel_in_the_hubs_signed_announcement(shop, tmp_path):
    _set_rules(shop, "floors: {pii: deny}")
    member = Node.init(tmp_path / "member", "member", "eu-de")
    invites = Invites(shop.home, shop.membership)
    token, _ = invites.issue("member", "eu-de", 600)
    admission = invites.redeem(token, member.home.key().public_bytes)
    member.membership.adopt("shop", admission.hub_key, admission.members)
    assert member.mesh_rules().floors == {"pii": "deny"}
    # Only the hub sets them; a member's attempt changes nothing.
    with pytest.raises(RefusedError, match="only the hub"):
        _set_rules(member, "{}")
    assert member.mesh_rules().floors == {"pii": "deny"}
    entries = audit.read(shop.home, action="rules")
    assert entries[-1]["detail"]["rules"] == {"floors": {"pii": "deny"}}


def test_every_fragment_served_is_an_audit_entry_with_columns_and_rows(shop):
    reader = shop.serve_fragment(
        "shop", "customers", "SELECT id, email FROM shop.customers", principal=ANALYST
    )
    assert reader.read_all().num_rows == 2  # the analyst's region
    entry = audit.read(shop.home, action="read")[-1]
    assert entry["who"] == "user:eve" and entry["product"] == "shop.customers"
    assert entry["detail"]["columns"] == ["id", "email"]
    assert entry["detail"]["rows"] == 2 and "complete" not in entry["detail"]
    assert len(entry["detail"]["fragment"]) == 16
    # A caller that stops reading early is recorded as such.
    cut = shop.serve_fragment("shop", "customers", "SELECT * FROM shop.customers", principal=None)
    next(iter(cut))
    del cut
    gc.collect()
    entry = audit.read(shop.home, action="read")[-1]
    assert entry["detail"]["complete"] is False


def test_a_row_filter_the_statistics_prove_true_is_left_out_with_the_same_rows(shop, tmp_path):
    """`salary >= :floor` with a floor below every salary holds for every row: the node
    serves the view without it. A new version with a salary under the floor, or a NULL one,
    is filtered again: the proof is made per version."""
    shop.set_policy(
        "customers",
        ProductPolicy.model_validate(
            {"row_filters": [{"roles": ["analyst"], "where": "salary >= :floor"}]}
        ),
    )
    low = Principal("user:eve", "analyst", "", {"floor": "10000"})
    high = Principal("user:eve", "analyst", "", {"floor": "70000"})
    sql = "SELECT id FROM customers ORDER BY id"
    assert [r["id"] for r in _rows(shop, sql, low)] == [1, 2, 3, 4]
    assert [r["id"] for r in _rows(shop, sql, high)] == [3, 4]
    snapshot = shop.products.snapshot("customers")
    assert shop._passes_every_row("shop", "customers", snapshot, "(salary >= '10000')")
    assert not shop._passes_every_row("shop", "customers", snapshot, "(salary >= '70000')")
    more = tmp_path / "more.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([5, 6], pa.int64()),
                "email": ["eli@shop.de", "fay@shop.de"],
                "ssn": ["555-66-7777", "666-77-8888"],
                "salary": pa.array([9_000.0, None], pa.float64()),
                "region": ["eu", "eu"],
            }
        ),
        more,
    )
    shop.publish("customers", str(more), mode="append")
    assert [r["id"] for r in _rows(shop, sql, low)] == [1, 2, 3, 4]
    count = "SELECT count(*) AS n FROM customers"
    assert _rows(shop, count, low) == [{"n": 4}]
    assert _rows(shop, count, None) == [{"n": 6}]
