"""The command line, through typer's runner: output, --json, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import io
import json
import stat

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shoal.cli import app
from tests.conftest import tree_snapshot

runner = CliRunner()


def shoal(*args: str, home=None):
    argv = list(args) + (["--home", str(home)] if home is not None else [])
    return runner.invoke(app, argv, catch_exceptions=False)


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    result = shoal("init", "--name", "berlin", "--region", "eu-de", home=path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def sales_csv(tmp_path):
    path = tmp_path / "sales.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "store", "amount"])
        for i in range(1, 11):
            writer.writerow([i, "berlin" if i % 2 else "paris", f"{i * 1.5:.2f}"])
    return path


def test_init_creates_a_home_with_a_private_key(home):
    assert (home / "settings.yaml").exists()
    assert stat.S_IMODE((home / "keys" / "node.key").stat().st_mode) == 0o600


def test_init_twice_fails_with_conflict_and_changes_nothing(home):
    before = tree_snapshot(home)
    result = shoal("init", "--name", "other", home=home)
    assert result.exit_code == 5
    assert "already" in result.output
    assert tree_snapshot(home) == before


def test_init_with_bad_name_is_usage_error(tmp_path):
    result = shoal("init", "--name", "Bad.Name", home=tmp_path / "h")
    assert result.exit_code == 2
    assert "invalid node name" in result.output
    assert not (tmp_path / "h").exists()


def test_home_from_environment(tmp_path, monkeypatch, sales_csv):
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "envhome"))
    assert runner.invoke(app, ["init", "--name", "shop"]).exit_code == 0
    result = runner.invoke(app, ["publish", "sales", str(sales_csv), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "1"


def test_publish_prints_version_rows_and_time(home, sales_csv):
    result = shoal("publish", "sales", str(sales_csv), home=home)
    assert result.exit_code == 0, result.output
    assert "berlin.sales version 1" in result.output
    assert "10 rows" in result.output
    assert " s" in result.output


def test_publish_quiet_prints_only_the_version(home, sales_csv):
    shoal("publish", "sales", str(sales_csv), home=home)
    result = shoal("publish", "sales", str(sales_csv), "--quiet", home=home)
    assert result.output == "2\n"


def test_publish_json(home, sales_csv):
    result = shoal("publish", "sales", str(sales_csv), "--json", home=home)
    data = json.loads(result.output)
    assert data["version"] == 1
    assert data["rows_added"] == 10


def test_contract_violation_exits_3_and_lists_the_rule(home, sales_csv, tmp_path):
    shoal("publish", "sales", str(sales_csv), home=home)
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,store,amount\n11,,1.0\n12,,2.0\n")
    before = tree_snapshot(home)
    result = shoal("publish", "sales", str(bad), home=home)
    assert result.exit_code == 3
    assert "required" in result.output
    assert "store" in result.output
    assert "Traceback" not in result.output
    assert tree_snapshot(home) == before


def test_unknown_source_kind_lists_supported_kinds(home, tmp_path):
    weird = tmp_path / "data.xyz"
    weird.write_text("x")
    result = shoal("publish", "sales", str(weird), home=home)
    assert result.exit_code == 2
    for kind in ("csv", "parquet", "json", "excel", "sqlite", "postgres"):
        assert kind in result.output.lower()


def test_bad_mode_is_a_usage_error(home, sales_csv):
    result = shoal("publish", "sales", str(sales_csv), "--mode", "merge", home=home)
    assert result.exit_code == 2


def test_products_describe_history(home, sales_csv):
    shoal("publish", "sales", str(sales_csv), home=home)
    shoal("publish", "sales", str(sales_csv), "--mode", "overwrite", home=home)
    listed = json.loads(shoal("products", "--json", home=home).output)
    assert [(p["name"], p["version"], p["rows"]) for p in listed] == [("sales", 2, 10)]
    assert "berlin.sales" in shoal("products", home=home).output
    described = json.loads(shoal("describe", "sales", "--json", home=home).output)
    assert [c["name"] for c in described["columns"]] == ["order_id", "store", "amount"]
    assert len(described["versions"]) == 2
    text = shoal("describe", "sales", home=home).output
    assert "classification" in text and "order_id" in text
    versions = json.loads(shoal("history", "sales", "--json", home=home).output)
    assert [(v["version"], v["mode"], v["rows_added"], v["rows_removed"]) for v in versions] == [
        (1, "append", 10, 0),
        (2, "overwrite", 10, 10),
    ]
    assert "overwrite" in shoal("history", "sales", home=home).output


def test_describe_unknown_product_exits_4(home):
    result = shoal("describe", "nothing", home=home)
    assert result.exit_code == 4


def test_commands_without_a_home_say_how_to_make_one(tmp_path):
    result = shoal("products", home=tmp_path / "none")
    assert result.exit_code == 4
    assert "shoal init" in result.output


def test_contract_show_and_set(home, sales_csv, tmp_path):
    shoal("publish", "sales", str(sales_csv), home=home)
    shown = shoal("contract", "show", "sales", home=home).output
    assert "kind: DataContract" in shown
    assert "status: draft" in shown
    changed = tmp_path / "c.yaml"
    changed.write_text(shown.replace("status: draft", "status: active"))
    result = shoal("contract", "set", "sales", str(changed), home=home)
    assert result.exit_code == 0, result.output
    assert "status: active" in shoal("contract", "show", "sales", home=home).output


@pytest.mark.parametrize(
    "content",
    ["", "not: [valid", "kind: Other\n", "\x00\x01\x02", "- just\n- a list\n", "a: b\n" * 10],
)
def test_contract_set_with_bad_file_exits_2_and_changes_nothing(home, sales_csv, tmp_path, content):
    shoal("publish", "sales", str(sales_csv), home=home)
    before = tree_snapshot(home)
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = shoal("contract", "set", "sales", str(bad), home=home)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert tree_snapshot(home) == before


def test_contract_set_with_oversized_file_is_refused(home, sales_csv, tmp_path):
    shoal("publish", "sales", str(sales_csv), home=home)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    result = shoal("contract", "set", "sales", str(big), home=home)
    assert result.exit_code == 2
    assert "1 MiB" in result.output


def test_sql_formats(home, sales_csv, tmp_path):
    shoal("publish", "sales", str(sales_csv), home=home)
    query = "SELECT store, count(*) AS n FROM sales GROUP BY store ORDER BY store"
    table = shoal("sql", query, home=home).output
    assert "berlin" in table and "(2 rows)" in table
    as_csv = shoal("sql", query, "--format", "csv", home=home).output
    assert list(csv.DictReader(io.StringIO(as_csv))) == [
        {"store": "berlin", "n": "5"},
        {"store": "paris", "n": "5"},
    ]
    as_json = json.loads(shoal("sql", query, "--format", "json", home=home).output)
    assert as_json == [{"store": "berlin", "n": 5}, {"store": "paris", "n": 5}]
    target = tmp_path / "out.parquet"
    result = shoal("sql", query, "-f", "parquet", "-o", str(target), home=home)
    assert result.exit_code == 0, result.output
    assert pq.read_table(target).to_pylist() == as_json
    qualified = shoal("sql", "SELECT count(*) AS n FROM berlin.sales", "-f", "json", home=home)
    assert json.loads(qualified.output) == [{"n": 10}]


def test_sql_unknown_format_is_a_usage_error(home):
    assert shoal("sql", "SELECT 1", "--format", "xml", home=home).exit_code == 2


def test_sql_row_limit_is_a_clear_error(home, sales_csv):
    settings = home / "settings.yaml"
    settings.write_text(settings.read_text().replace("sql_max_rows: 1000000", "sql_max_rows: 3"))
    shoal("publish", "sales", str(sales_csv), home=home)
    result = shoal("sql", "SELECT * FROM sales", home=home)
    assert result.exit_code == 2
    assert "LIMIT" in result.output


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "COPY (SELECT 1) TO 'x.csv'",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "PRAGMA version",
        "EXPORT DATABASE 'dump'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; SELECT 2",
    ],
)
def test_sql_lockdown_exits_6(home, query):
    result = shoal("sql", query, home=home)
    assert result.exit_code == 6, result.output
    assert "Traceback" not in result.output


def test_sql_error_has_no_traceback(home):
    result = shoal("sql", "SELEC nonsense", home=home)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(home):
    result = runner.invoke(app, ["--debug", "describe", "nothing", "--home", str(home)])
    assert result.exit_code != 0
    assert result.exception is not None


def test_help_lists_every_command():
    text = runner.invoke(app, ["--help"]).output
    for command in ("init", "publish", "products", "describe", "history", "contract", "sql"):
        assert command in text
    publish_help = runner.invoke(app, ["publish", "--help"]).output
    assert "--mode" in publish_help and "sqlite" in publish_help
