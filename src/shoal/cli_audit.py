"""`shoal audit`: read or verify a node's signed audit log.

Registered on the one `shoal` app by `shoal.cli`; like it, it only parses, calls and
renders. The log itself is `shoal.audit`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from shoal import audit
from shoal.cli import (
    AtOption,
    HomeOption,
    JsonOption,
    ProfileOption,
    app,
    handles_errors,
    mesh_for,
    out,
    print_json,
)
from shoal.config import open_home, resolve_home
from shoal.errors import NotFoundError, UsageError
from shoal.names import check_name

__all__: list[str] = []

_SUMMARY_CHARS = 120


@app.command("audit")
@handles_errors
def audit_command(
    node: Annotated[
        str | None,
        typer.Option(
            "--node", help="Read this node's log, as NODE._audit over the mesh [default: here]."
        ),
    ] = None,
    who: Annotated[
        str | None,
        typer.Option("--who", help="Only entries by this principal: user:alice, node:b, cli."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only entries from this time on: ISO 8601 or a duration ago (2h, 7d)."
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only this action: publish, read, grant, refuse ..."),
    ] = None,
    product: Annotated[
        str | None, typer.Option("--product", help="Only entries about NODE.PRODUCT.")
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", min=1, help="Only the newest N entries.")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check every entry's signature and link and the checkpoint (exit 7 if the "
            "log was altered); print the checkpoint.",
        ),
    ] = False,
    as_json: JsonOption = False,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """Show who did what on a node: publishes, reads, grants, refusals, repairs ...

    Reads this home's signed audit log, or with --node another node's (for admins and
    auditors, through the mesh). --verify proves the local log was not altered.
    """
    try:
        start = audit.parse_since(since) if since is not None else None
    except UsageError as exc:
        raise UsageError(f"--since: {exc.message}") from None
    remote = at is not None or profile is not None
    if check:
        if node is not None or remote:
            raise UsageError("--verify checks this home's audit log; run it on the node itself")
        _print_verified(audit.verify(open_home(resolve_home(home))), as_json)
        return
    if node is None and remote:
        raise UsageError("with --at or --profile, name the node whose log to read: --node NAME")
    local = None if remote else open_home(resolve_home(home))
    if local is not None and node in (None, local.settings.name):
        entries = audit.read(local, who=who, since=start, action=action, product=product)
    else:
        assert node is not None  # None was handled by one of the branches above
        entries = _read_remote(node, who, start, action, product, at, home, profile)
    if last is not None:
        entries = entries[-last:]
    if as_json:
        print_json(entries)
    else:
        _print_entries(entries)


def _read_remote(
    node: str,
    who: str | None,
    start: datetime | None,
    action: str | None,
    product: str | None,
    at: str | None,
    home: Path | None,
    profile: Path | None,
) -> list[dict[str, Any]]:
    """Ask the mesh for `<node>._audit`, the filters pushed into its WHERE clause."""
    check_name(node, "node")
    filters = [
        f"{column} = {_literal(value)}"
        for column, value in (("who", who), ("action", action), ("product", product))
        if value is not None
    ]
    if start is not None:
        filters.append(f"time >= TIMESTAMPTZ {_literal(start.isoformat())}")
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    query = f"SELECT * FROM {node}.{audit.AUDIT_PRODUCT}{where} ORDER BY seq"
    try:
        with mesh_for(at, home, profile) as mesh:
            rows = mesh.sql(query).arrow().to_pylist()
    except NotFoundError as exc:
        raise NotFoundError(
            f"node '{node}' does not show its audit log to you ({exc.message})",
            hint=f"its admins and auditors can read it as {node}.{audit.AUDIT_PRODUCT}, "
            "or run `shoal audit` on that node's home",
        ) from exc
    return [_row_entry(row) for row in rows]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _row_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A row of `<node>._audit` as the entry `audit.read` would give."""
    when = row["time"]
    entry = {
        "seq": row["seq"],
        "time": when.isoformat(timespec="milliseconds") if when is not None else None,
        "node": row["node"],
        "who": row["who"],
        "action": row["action"],
        "detail": json.loads(row["detail"] or "{}"),
    }
    if row.get("product") is not None:
        entry["product"] = row["product"]
    return entry


def _print_entries(entries: list[dict[str, Any]]) -> None:
    table = Table("time", "who", "action", "product", "detail")
    for entry in entries:
        table.add_row(
            Text(_short_time(entry["time"])),
            Text(str(entry["who"])),
            Text(str(entry["action"])),
            Text(str(entry.get("product") or "-")),
            Text(_summary(entry["detail"])),
        )
    out.print(table)
    out.print(f"({len(entries):,} entr{'y' if len(entries) == 1 else 'ies'})")


def _short_time(text: Any) -> str:
    # Every entry is in UTC: `2025-05-01 09:30:00.123Z` reads better than the ISO form.
    return str(text).replace("T", " ").replace("+00:00", "Z")


def _summary(detail: Any) -> str:
    """The detail on one line: key=value, lists joined by commas, cut to fit a table."""
    if not isinstance(detail, dict):
        return str(detail)[:_SUMMARY_CHARS]
    parts = []
    for key, value in sorted(detail.items()):
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown}")
    text = " ".join(parts).replace("\n", " ")
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def _print_verified(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    notes = []
    if result["unsigned"]:
        notes.append(f"{result['unsigned']} after the checkpoint, signed at the next entry")
    if result["torn_bytes"]:
        notes.append(f"a torn last line of {result['torn_bytes']} bytes, cut at the next entry")
    extra = f" ({'; '.join(notes)})" if notes else ""
    out.print(
        f"audit log of node '{result['node']}' verifies: {result['entries']} entries{extra}",
        markup=False,
    )
    if result["checkpoint"]:
        out.print(result["checkpoint"], markup=False, end="")
