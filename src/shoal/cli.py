"""The `shoal` command line: parse, call a `Node`, render. No logic of its own.

Errors are `ShoalError`s: the message goes to stderr and the process exits with the error's
code; a traceback only with --debug (or SHOAL_DEBUG=1).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from shoal import __version__
from shoal.client import Mesh, connect
from shoal.config import resolve_home
from shoal.errors import ShoalError, UsageError
from shoal.log import HistoryError
from shoal.node import Node
from shoal.products import Mode
from shoal.results import read_bounded, stale_warning, versions_read
from shoal.sources import SourceOptions, supported

__all__ = ["app", "main"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="shoal",
    help="Shoal: a data mesh in a box. Each node owns versioned, contract-checked data "
    "products and answers SQL over them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
contract_app = typer.Typer(help="Show or replace a product's data contract.", no_args_is_help=True)
app.add_typer(contract_app, name="contract")
key_app = typer.Typer(help="Manage the node's signing key.", no_args_is_help=True)
app.add_typer(key_app, name="key")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Node home folder [env SHOAL_HOME; default ./.shoal].",
        envvar="SHOAL_HOME",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Ask the running node at this URL, as the node of --home (or with --profile).",
    ),
]
ProfileOption = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        help="A profile from `shoal user add` (endpoint, mesh CA, token) [env SHOAL_PROFILE].",
        envvar="SHOAL_PROFILE",
        show_default=False,
    ),
]


class _State:
    """Per-invocation flags set by the root callback."""

    debug = False


def _debug() -> bool:
    return _State.debug or os.environ.get("SHOAL_DEBUG", "") not in ("", "0")


def handles_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a ShoalError into its message on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ShoalError as exc:
            if _debug():
                raise
            err.print(f"error: {exc.message}", markup=False)
            if exc.hint:
                err.print(f"hint: {exc.hint}", markup=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def open_node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


@contextmanager
def mesh_for(at: str | None, home: Path | None, profile: Path | None = None) -> Iterator[Mesh]:
    """A Mesh on a profile's endpoint (or `at`) as its user, on the node at URL `at` as the
    node of the local home, or on the local home itself."""
    if profile is not None:
        mesh = connect(profile=profile, url=at)
    elif at is not None:
        if not at.startswith(("http://", "https://")):
            raise UsageError(f"invalid --at URL {at!r}: want https://HOST:PORT")
        mesh = connect(at, home=home)
    else:
        mesh = Mesh(open_node(home))
    with mesh:
        yield mesh


def print_json(data: Any) -> None:
    out.print(json.dumps(data, indent=2, default=str), markup=False)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"shoal {__version__}")
        raise typer.Exit(0)
    _State.debug = debug
    if debug:
        logging.basicConfig(level=logging.DEBUG)


@app.command()
@handles_errors
def init(
    name: Annotated[str, typer.Option("--name", help="Node name: lowercase letters, digits, _.")],
    region: Annotated[
        str, typer.Option("--region", help="Jurisdiction label, e.g. eu-de.")
    ] = "local",
    home: HomeOption = None,
) -> None:
    """Create a node home: settings, an Ed25519 node key and an empty product store."""
    root = resolve_home(home)
    node = Node.init(root, name, region)
    out.print(f"created node '{node.name}' (region {node.home.settings.region}) in {root}")


@app.command(epilog=f"Supported sources: {supported()}.")
@handles_errors
def publish(
    product: Annotated[str, typer.Argument(help="Product name, e.g. sales.")],
    source: Annotated[
        str,
        typer.Argument(
            help="A file (.csv .tsv .parquet .json .ndjson .xlsx) or a database URL "
            "(sqlite:///file.db, postgresql://...)."
        ),
    ],
    mode: Annotated[
        Mode, typer.Option("--mode", help="append, overwrite, or upsert (needs a key).")
    ] = Mode.APPEND,
    key: Annotated[
        str | None, typer.Option("--key", help="Upsert key columns: COL[,COL...].")
    ] = None,
    contract: Annotated[
        Path | None, typer.Option("--contract", help="ODCS contract YAML to publish under.")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="Database table to read.")] = None,
    query: Annotated[str | None, typer.Option("--query", help="Database query to read.")] = None,
    sheet: Annotated[str | None, typer.Option("--sheet", help="Excel sheet name.")] = None,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter (detected if omitted).")
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option("--header/--no-header", help="CSV has a header row (detected if omitted)."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="CSV encoding (detected if omitted).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the version.")] = False,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Publish a source as the next version of a data product, checked against its contract."""
    node = open_node(home)
    keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
    options = SourceOptions(
        table=table,
        query=query,
        sheet=sheet,
        delimiter=delimiter,
        header=header,
        encoding=encoding,
    )
    show_progress = not quiet and not as_json and err.is_terminal
    with Progress(
        SpinnerColumn(),
        TextColumn("publishing {task.description}: {task.completed:,.0f} rows read"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show_progress,
    ) as bar:
        task = bar.add_task(product, total=None)
        result = node.publish(
            product,
            source,
            mode=mode,
            key=keys,
            contract_file=contract,
            options=options,
            progress=lambda rows: bar.update(task, completed=rows),
        )
    if quiet:
        out.print(str(result.version))
    elif as_json:
        print_json(result.to_dict())
    else:
        inferred = " (contract inferred, status draft)" if result.contract_inferred else ""
        out.print(
            f"published {node.name}.{result.product} version {result.version}: "
            f"{result.rows_added:,} rows {result.mode}ed, {result.rows_total:,} in total, "
            f"in {result.seconds:.2f} s{inferred}"
        )


@app.command()
@handles_errors
def products(
    mesh: Annotated[bool, typer.Option("--mesh", help="Every product in the mesh.")] = False,
    as_json: JsonOption = False,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """List this node's products, or with --mesh (or --at) every product in the mesh."""
    if mesh or at is not None or profile is not None:
        with mesh_for(at, home, profile) as remote:
            rows = remote.products()
            if not mesh:
                here = remote.nodes()
                me = next((r["name"] for r in here if r["state"] == "self"), None)
                rows = [r for r in rows if r["owner"] == me]
        if as_json:
            print_json(rows)
            return
        table = Table("product", "version", "rows", "size", "last publish", "contract", "holders")
        for row in rows:
            table.add_row(
                row["name"],
                str(row["version"]),
                f"{row['rows']:,}",
                _size(row["size_bytes"]),
                row["last_publish"],
                row["contract_version"],
                ", ".join(row["holders"]),
            )
        out.print(table)
        return
    node = open_node(home)
    items = node.list_products()
    if as_json:
        print_json([item.to_dict() for item in items])
        return
    if not items:
        out.print("no products yet; publish one with `shoal publish NAME FILE`")
        return
    table = Table("product", "version", "rows", "size", "last publish", "contract")
    for item in items:
        table.add_row(
            f"{item.owner}.{item.name}",
            str(item.version),
            f"{item.rows:,}",
            _size(item.size_bytes),
            item.last_publish,
            f"{item.contract_version} ({item.contract_status})",
        )
    out.print(table)


@app.command()
@handles_errors
def describe(
    product: Annotated[str, typer.Argument(help="Product name, or NODE.PRODUCT in the mesh.")],
    as_json: JsonOption = False,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """Show a product's schema with classifications, its contract and its versions."""
    if at is not None or profile is not None or "." in product:
        _describe_in_mesh(product, as_json, at, home, profile)
        return
    node = open_node(home)
    info = node.describe(product)
    versions = node.history(product)
    if as_json:
        data = info.to_dict()
        data["versions"] = [v.to_dict() for v in versions]
        print_json(data)
        return
    out.print(f"[bold]{info.owner}.{info.name}[/bold]  version {info.version}")
    out.print(
        f"{info.rows:,} rows in {info.files} file(s), {_size(info.size_bytes)}; "
        f"last publish {info.last_publish}"
    )
    out.print(f"contract {info.contract_version} ({info.contract_status})")
    table = Table("column", "type", "required", "unique", "classification", "pii", "rules")
    for col in info.columns:
        table.add_row(
            str(col["name"]),
            str(col["type"]),
            "yes" if col.get("required") else "",
            "key" if col.get("primary_key") else ("yes" if col.get("unique") else ""),
            str(col.get("classification") or ""),
            "yes" if col.get("pii") else "",
            str(col.get("rules") or ""),
        )
    out.print(table)
    out.print(f"{len(versions)} version(s); see `shoal history {product}`")


def _describe_in_mesh(
    name: str, as_json: bool, at: str | None, home: Path | None, profile: Path | None = None
) -> None:
    with mesh_for(at, home, profile) as mesh:
        found = mesh.describe(name)
    if as_json:
        print_json(found)
        return
    for entry in found:
        out.print(f"[bold]{entry['name']}[/bold]  version {entry['version']}")
        out.print(
            f"{entry['rows']:,} rows, {_size(entry['size_bytes'])}; last publish "
            f"{entry['last_publish']}"
        )
        if "residency" in entry:
            out.print(
                f"residency {entry['residency']}; {entry['replicas_wanted']} replica(s) "
                f"wanted, on {', '.join(entry['wanted_holders']) or 'no node yet'}"
            )
            for holder in entry["holders"]:
                role = "owner" if holder["owner"] else "replica"
                fresh = "current" if holder["current"] else "behind"
                out.print(
                    f"  {role} {holder['node']}: version {holder['version']} ({fresh}), "
                    f"{holder['state']}"
                )
        else:
            out.print(f"held by {', '.join(entry['holders'])}")
        out.print(f"contract {entry['contract_version']}")
        table = Table("column", "type")
        for col in entry["columns"]:
            table.add_row(col["name"], col["type"])
        out.print(table)
        out.print("latest signed checkpoint:")
        out.print(entry["checkpoint"].rstrip(), markup=False)


@app.command()
@handles_errors
def history(
    product: Annotated[str, typer.Argument(help="Product name.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """List every version of a product: number, time, mode, rows added/removed, files."""
    node = open_node(home)
    versions = node.history(product)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table = Table("version", "time", "mode", "rows added", "rows removed", "files", "contract")
    for v in versions:
        table.add_row(
            str(v.version),
            v.time,
            v.mode,
            f"{v.rows_added:,}",
            f"{v.rows_removed:,}",
            f"+{v.files_added} -{v.files_removed}",
            v.contract_version,
        )
    out.print(table)


@contract_app.command("show")
@handles_errors
def contract_show(
    product: Annotated[str, typer.Argument(help="Product name.")],
    home: HomeOption = None,
) -> None:
    """Print a product's contract (ODCS YAML)."""
    node = open_node(home)
    out.print(node.contract_text(product), markup=False, end="")


@contract_app.command("set")
@handles_errors
def contract_set(
    product: Annotated[str, typer.Argument(help="Product name.")],
    file: Annotated[Path, typer.Argument(help="The new contract (ODCS YAML).")],
    home: HomeOption = None,
) -> None:
    """Replace a product's contract; a breaking change needs a higher major version."""
    node = open_node(home)
    contract = node.set_contract(product, file)
    out.print(f"contract of {node.name}.{product} is now version {contract.version}")


@app.command()
@handles_errors
def verify(
    product: Annotated[
        str | None, typer.Argument(help="Product to verify; every product when omitted.")
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option("--against", help="A checkpoint saved earlier that history must extend."),
    ] = None,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Re-hash every file and re-check every signed log entry and checkpoint (exit 7 if bad)."""
    node = open_node(home)
    if against is not None:
        if product is None:
            raise UsageError("--against needs a PRODUCT")
        note = _read_small_text(against)
        result = node.verify_against(product, note)
        if as_json:
            print_json(result)
        else:
            out.print(
                f"{node.name}.{product}: history of {result['size']} entries extends the "
                f"checkpoint of size {result['checkpoint_size']}"
            )
        return
    copies = node.scrub_copies() if product is None else []
    try:
        summaries = node.verify(product)
    except HistoryError:
        # A file that fails its hash is quarantined and fetched back from a replica, then
        # the history is checked again (and still fails if no replica had the file).
        repaired = node.scrub_own(node.products.names() if product is None else [product])
        for item in repaired:
            if item["repaired"]:
                err.print(
                    f"{item['product']}: repaired {', '.join(item['repaired'])} from a replica",
                    markup=False,
                )
        summaries = node.verify(product)
    if as_json:
        print_json(summaries + copies)
    else:
        for item in summaries:
            out.print(
                f"{node.name}.{item['product']}: ok, {item['entries']} entries to version "
                f"{item['version']}, {item['files']} live file(s), "
                f"{_size(item['bytes_hashed'])} re-hashed, root {item['root'][:16]}"
            )
        for item in copies:
            state = (
                f"{len(item['bad'])} bad file(s) quarantined: {', '.join(item['bad'])}"
                if item["bad"]
                else "ok"
            )
            out.print(f"{item['product']} (replica): {state}, version {item['version']}")
        if not summaries and not copies:
            out.print("no products to verify")
    if any(item["bad"] for item in copies):
        raise HistoryError(
            "replicas", "files failed their hash check; the server fetches them again"
        )


@app.command()
@handles_errors
def replicate(
    product: Annotated[str, typer.Argument(help="One of this node's products.")],
    replicas: Annotated[
        int,
        typer.Option(
            "--replicas", "-k", help="Copies wanted besides this node's (0 removes them)."
        ),
    ],
    home: HomeOption = None,
) -> None:
    """Keep K verified copies of a product on other nodes, in the regions its contract's
    `residency` allows (default: this node's region only). A running server tells the
    mesh; `shoal describe NODE.PRODUCT` shows the wanted and the actual holders."""
    node = open_node(home)
    entry = node.set_replicas(product, replicas)
    placement = node.placement(entry)
    out.print(
        f"{entry.key}: {replicas} replica(s) wanted, in {placement['residency']}; "
        f"chosen now: {', '.join(placement['wanted_holders']) or 'none'}"
    )
    if replicas > len(placement["wanted_holders"]):
        err.print(
            f"warning: only {len(placement['wanted_holders'])} other node(s) in "
            f"{placement['residency']} can hold a copy",
            markup=False,
        )


@app.command()
@handles_errors
def pull(
    product: Annotated[str, typer.Argument(help="OWNER.PRODUCT to copy to this node.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Bring this node's copy of OWNER.PRODUCT up to date now, verified (a running server
    does this by itself for the copies placed on it)."""
    node = open_node(home)
    result = node.pull(product)
    if as_json:
        print_json(result)
        return
    if result["entries_after"] == result["entries_before"]:
        out.print(f"{product}: copy already current ({result['entries_after']} entries)")
    else:
        out.print(
            f"{product}: copy at {result['entries_after']} entries (was "
            f"{result['entries_before']}), {result['files']} file(s), "
            f"{_size(result['bytes'])} from node '{result['source']}', verified"
        )


@app.command("log")
@handles_errors
def log_command(
    product: Annotated[str, typer.Argument(help="Product name.")],
    start: Annotated[int, typer.Option("--from", help="First entry (sequence number).")] = 0,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show a product's signed log entries."""
    if start < 0:
        raise UsageError("--from must be 0 or more")
    entries = open_node(home).log_entries(product, start)
    if as_json:
        print_json(entries)
        return
    table = Table("seq", "kind", "version", "time", "rows +/-", "files +/-", "key", "leaf hash")
    for e in entries:
        table.add_row(
            str(e["seq"]),
            e["kind"],
            str(e["version"]),
            e["time"],
            f"+{e['rows_added']:,} -{e['rows_removed']:,}",
            f"+{len(e['files_added'])} -{len(e['files_removed'])}",
            e["key_id"],
            e["leaf_hash"][:16],
        )
    out.print(table)


@app.command()
@handles_errors
def checkpoint(
    product: Annotated[str, typer.Argument(help="Product name.")],
    home: HomeOption = None,
) -> None:
    """Print the product's latest signed checkpoint (save it to verify --against later)."""
    out.print(open_node(home).checkpoint(product), markup=False, end="")


@app.command()
@handles_errors
def proof(
    product: Annotated[str, typer.Argument(help="Product name.")],
    version: Annotated[int, typer.Option("--version", help="The version to prove.")],
    home: HomeOption = None,
) -> None:
    """Print the inclusion proof of a version in the latest checkpoint, as JSON."""
    print_json(open_node(home).proof(product, version))


@key_app.command("rotate")
@handles_errors
def key_rotate(home: HomeOption = None) -> None:
    """Make a new node key; every product log records the change, signed by the old key."""
    old, new = open_node(home).rotate_key()
    out.print(f"node key rotated: {old} -> {new} (old key kept in keys/retired/)")


def _read_small_text(path: Path) -> str:
    try:
        if path.stat().st_size > 64 * 1024:
            raise UsageError(f"{path} is too large to be a checkpoint")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


FORMATS = ("table", "csv", "json", "parquet")


@app.command()
@handles_errors
def sql(
    query: Annotated[str, typer.Argument(help="One read-only SQL statement (DuckDB dialect).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, json or parquet.")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result to this file.")
    ] = None,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """Answer SQL over the products of every node in the mesh.

    NODE.PRODUCT is one product; a plain PRODUCT is every node's product of that name,
    unioned by column name, with a column _node naming each row's owner.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise UsageError("parquet output is binary: give -o FILE or redirect stdout")
    with mesh_for(at, home, profile) as mesh:
        reader = mesh.sql_reader(query)
        warning = stale_warning(versions_read(reader.schema))
        if warning:
            err.print(warning, markup=False)
        local = at is None and profile is None
        max_rows = mesh.node.home.settings.sql_max_rows if local else 1_000_000
        _write_result(reader, fmt, output, max_rows)


def _write_result(
    reader: pa.RecordBatchReader, fmt: str, output: Path | None, max_rows: int
) -> None:
    if fmt in ("table", "json"):
        result = read_bounded(
            reader, max_rows, hint="add LIMIT, or write it with --format csv|parquet -o FILE"
        )
        if fmt == "table":
            _render_table(result, output)
        else:
            _write_text(json.dumps(result.to_pylist(), default=str, indent=1) + "\n", output)
        return
    target: Any = str(output) if output is not None else sys.stdout.buffer
    if fmt == "csv":
        with pacsv.CSVWriter(target, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
    else:
        with pq.ParquetWriter(target, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)


@app.command()
@handles_errors
def demo(
    check: Annotated[
        bool, typer.Option("--check", help="Run the tour without waiting; verify every answer.")
    ] = False,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Build the nodes' homes here and keep them.")
    ] = None,
    orders: Annotated[
        int, typer.Option("--orders", min=1, max=5_000_000, help="Orders per store.")
    ] = 20_000,
) -> None:
    """Run a local mesh of four nodes with retail data and a guided tour of questions.

    Keeps the mesh running until Ctrl-C; with --check, exits 0 only if every answer
    matches the answer computed over the generated data in one place.
    """
    from shoal.demo import run_demo

    if not run_demo(out, keep=keep, check=check, orders=orders):
        raise typer.Exit(1)


def _render_table(result: pa.Table, output: Path | None) -> None:
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*(Text("NULL" if v is None else str(v)) for v in row.values()))
    if output is not None:
        with output.open("w", encoding="utf-8") as handle:
            Console(file=handle, width=200).print(table)
        return
    out.print(table)
    out.print(f"({result.num_rows:,} row{'s' if result.num_rows != 1 else ''})")


def _write_text(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"


def main() -> None:
    """Console-script entry point."""
    app(prog_name="shoal")


# The mesh commands register themselves on `app`; imported last because they use the
# helpers above.
from shoal import cli_audit, cli_mesh, cli_security  # noqa: E402, F401
