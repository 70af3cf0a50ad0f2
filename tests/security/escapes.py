"""Every way out of the SQL sandbox the security tests try, with the error each must get.

`{secret}` stands for a file whose text must never come back; `{out}` for a path nothing
may create. `local` is the refusal of `Node.sql` (and of a serving node running a
fragment: the same session); `federated` that of `Node.query`, where the planner reads the
statement first (None: the same as `local`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.errors import LockdownError, NotFoundError, ShoalError, UsageError

SECRET_TEXT = "SHOAL-CANARY-7f3a9c"


@dataclass(frozen=True)
class Escape:
    id: str
    sql: str
    local: type[ShoalError]
    federated: type[ShoalError] | None = None

    def fill(self, secret: str, out: str) -> str:
        return self.sql.replace("{secret}", secret).replace("{out}", out)

    @property
    def via_planner(self) -> type[ShoalError]:
        return self.federated or self.local


L, U, N = LockdownError, UsageError, NotFoundError

ESCAPES = [
    # -- reading files and URLs: DuckDB's own guard (enable_external_access=false) --------
    Escape("read_csv", "SELECT * FROM read_csv('{secret}')", L),
    Escape("read_csv_auto", "SELECT * FROM read_csv_auto('{secret}')", L),
    Escape("read_text", "SELECT * FROM read_text('{secret}')", L),
    Escape("read_blob", "SELECT * FROM read_blob('{secret}')", L),
    Escape("read_json", "SELECT * FROM read_json('{secret}')", L),
    Escape("read_json_auto", "SELECT * FROM read_json_auto('{secret}')", L),
    Escape("read_ndjson", "SELECT * FROM read_ndjson('{secret}')", L),
    Escape("read_parquet", "SELECT * FROM read_parquet('{secret}')", L),
    Escape("parquet_scan", "SELECT * FROM parquet_scan('{secret}')", L),
    Escape("parquet_metadata", "SELECT * FROM parquet_metadata('{secret}')", L),
    Escape("sniff_csv", "SELECT * FROM sniff_csv('{secret}')", L),
    Escape("read_duckdb", "SELECT * FROM read_duckdb('{secret}')", L),
    Escape("glob", "SELECT * FROM glob('/etc/*')", L),
    Escape("glob_secret", "SELECT * FROM glob('{secret}')", L),
    Escape("https_read_csv", "SELECT * FROM read_csv('https://example.com/x.csv')", L),
    Escape("https_string", "SELECT * FROM 'https://example.com/x.csv'", L, N),
    Escape("s3_read_parquet", "SELECT * FROM read_parquet('s3://bucket/x.parquet')", L),
    # a path or URL as a table name is no table (nothing is opened)
    Escape("passwd_string", "SELECT * FROM '/etc/passwd'", N),
    Escape("passwd_from_first", "FROM '/etc/passwd'", N),
    Escape("passwd_identifier", 'SELECT * FROM "/etc/passwd"', N),
    Escape("secret_string", "SELECT * FROM '{secret}'", N),
    # hidden deeper in a statement that is a SELECT
    Escape("in_join", "SELECT * FROM orders, read_text('{secret}')", L),
    Escape("in_scalar", "SELECT (SELECT content FROM read_text('{secret}')) AS c", L),
    Escape("in_cte", "WITH t AS (SELECT * FROM read_text('{secret}')) SELECT * FROM t", L),
    Escape("in_where", "SELECT 1 WHERE 1 IN (SELECT 1 FROM read_text('{secret}'))", L),
    Escape("in_union", "SELECT 'x' AS c UNION ALL SELECT content FROM read_text('{secret}')", L),
    Escape("summarize_file", "SUMMARIZE SELECT * FROM read_csv('{secret}')", L),
    Escape("query_copy", "SELECT * FROM query('COPY (SELECT 1) TO ''{out}''')", U),
    Escape("query_attach", "SELECT * FROM query('ATTACH '':memory:'' AS x')", U),
    Escape(
        "external_resource",
        "SELECT * FROM destroy_external_resource('read_text', '{secret}')",
        L,
    ),
    # environment, secrets, extensions
    Escape("getenv", "SELECT getenv('HOME')", N),
    Escape("secrets", "SELECT * FROM duckdb_secrets()", L),
    Escape("which_secret", "SELECT * FROM which_secret('s3://b/x', 's3')", L),
    Escape("extensions", "SELECT * FROM duckdb_extensions()", L),
    Escape("iceberg_autoload", "SELECT * FROM iceberg_scan('{secret}')", N),
    Escape("install_httpfs", "INSTALL httpfs", L),
    Escape("install_from", "INSTALL httpfs FROM 'https://example.com'", L),
    Escape("load_httpfs", "load httpfs", L),
    Escape("load_path", "LOAD '{out}'", L),
    # configuration: locked, and SET/RESET never reach it
    Escape("set_external_access", "SET enable_external_access = true", L),
    Escape("set_unlock", "SET lock_configuration = false", L),
    Escape("set_memory", "SET memory_limit = '64GB'", L),
    Escape("set_variable", "SET VARIABLE x = 1", L),
    Escape("reset", "RESET memory_limit", L),
    Escape("enable_logging_fn", "SELECT * FROM enable_logging()", L),
    Escape("enable_profiling_fn", "SELECT * FROM enable_profiling()", L),
    Escape("grammar_extension", "SELECT * FROM add_grammar_extension('x')", L),
    Escape("pragma_version", "PRAGMA version", L),
    Escape("pragma_profiling", "PRAGMA enable_profiling", L),
    Escape("pragma_threads", "PRAGMA threads = 1", L),
    Escape("call_pragma", "CALL pragma_version()", L),
    Escape("call_logging", "CALL enable_logging()", L),
    # writing files
    Escape("copy_to", "COPY (SELECT 1) TO '{out}'", L),
    Escape("copy_product", "COPY orders TO '{out}' (FORMAT parquet)", L),
    Escape("copy_from", "COPY orders FROM '{secret}'", L),
    Escape("export", "EXPORT DATABASE '{out}'", L),
    Escape("import", "IMPORT DATABASE '{out}'", L),
    # other databases and catalogs
    Escape("attach_memory", "ATTACH ':memory:' AS other", L),
    Escape("attach_file", "ATTACH '{out}' AS other", L),
    Escape("detach", "DETACH memory", L),
    Escape("connect", "CONNECT memory", L),  # a statement type DuckDB's Python enum cannot name
    Escape("use", "USE memory", L),
    # changing anything
    Escape("create_table", "CREATE TABLE t AS SELECT 1", L),
    Escape("create_macro", "CREATE MACRO m() AS 1", L),
    Escape("create_secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", L),
    Escape("insert", "INSERT INTO orders VALUES (9, 9.0)", L),
    Escape("update", "UPDATE orders SET amount = 0", L),
    Escape("delete", "DELETE FROM orders", L),
    Escape("drop", "DROP VIEW orders", L),
    Escape("alter", "ALTER VIEW orders RENAME TO gone", L),
    Escape("checkpoint", "CHECKPOINT", L),
    Escape("force_checkpoint", "FORCE CHECKPOINT", L),
    Escape("vacuum", "VACUUM", L),
    Escape("begin", "BEGIN TRANSACTION", L),
    Escape("prepare", "PREPARE p AS SELECT 1", L),
    Escape("pivot_makes_types", "PIVOT orders ON id USING sum(amount)", L),
    # EXPLAIN ANALYZE runs what it explains: only a SELECT may be explained
    Escape("explain_analyze_create", "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", L),
    Escape(
        "explain_analyze_replace_view",
        "EXPLAIN ANALYZE CREATE OR REPLACE VIEW orders AS SELECT 0 AS id, 0.0 AS amount",
        L,
    ),
    Escape("explain_options_insert", "EXPLAIN (ANALYZE) INSERT INTO orders VALUES (1, 1.0)", L),
    Escape(
        "explain_commented_drop",
        "/* a */ EXPLAIN /* b */ ANALYZE -- c\n DROP VIEW orders",
        L,
    ),
    Escape("explain_analyze_copy", "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'", L),
    Escape("explain_analyze_set", "EXPLAIN ANALYZE SET threads = 1", L),
    Escape("explain_analyze_macro", "EXPLAIN ANALYZE CREATE MACRO m() AS 1", L),
    # more than one statement, or statements hidden by comments and odd characters
    Escape("two_selects", "SELECT 1; SELECT 2", L),
    Escape("select_then_copy", "SELECT 1; COPY (SELECT 1) TO '{out}'", L),
    Escape("select_then_drop", "SELECT 1;DROP VIEW orders", L),
    Escape("line_comment_then_copy", "-- comment\nCOPY (SELECT 1) TO '{out}'", L),
    Escape("block_comment_then_copy", "/* SELECT */ COPY (SELECT 1) TO '{out}'", L),
    Escape("unterminated_comment", "SELECT 1 /* ; COPY (SELECT 1) TO '{out}'", U),
    Escape("nul_then_drop", "SELECT 1\x00; DROP VIEW orders", L),
    Escape("line_separator", "SELECT 1\u2028; COPY (SELECT 1) TO '{out}'", L),
    Escape("bidi_override", "SELECT 1 /* \u202e */ ; COPY (SELECT 1) TO '{out}'", L),
    Escape("fullwidth_semicolon", "SELECT 1\uff1b COPY (SELECT 1) TO '{out}'", U),
    Escape("cyrillic_copy", "\u0421OPY (SELECT 1) TO '{out}'", U),
    Escape("lone_surrogate", "SELECT '\ud800'", U),
    Escape("nothing", "", L, U),
    Escape("only_semicolons", ";;;", L),
    Escape("only_comment", "/* nothing */", L),
    # size and depth
    Escape("ten_megabytes", "SELECT 1 /*" + "x" * 10_000_000 + "*/", U),
    Escape("deep_parentheses", "SELECT " + "(" * 100_000 + "1" + ")" * 100_000, U),
    Escape(
        "deep_subqueries", "SELECT * FROM " + "(SELECT * FROM " * 2000 + "orders" + ")" * 2000, U
    ),
]

# Statements a comment or a string makes harmless: they run, as the one SELECT they are.
HARMLESS = [
    ("SELECT 1 AS v /* ; DROP VIEW orders */", 1),
    ("SELECT 1 AS v -- ; COPY (SELECT 1) TO '{out}'", 1),
    ("SELECT 1 AS v /* /* */ ; COPY (SELECT 1) TO '{out}' */", 1),
    ("SELECT length($$; COPY (SELECT 1) TO 'x.csv'$$) AS v", len("; COPY (SELECT 1) TO 'x.csv'")),
    ("SELECT length('; DROP VIEW orders') AS v", len("; DROP VIEW orders")),
]
