"""The audit log as an Arrow table: what `<node>._audit` shows in SQL.

One row per entry. The detail stays whole as JSON text; the fields a read records
(`columns`, `rows`, `fragment`) also get columns of their own, null on other rows, so the
schema is the same whatever the log holds and queries such as
`SELECT who, sum(rows) FROM berlin._audit WHERE action = 'read' GROUP BY who` need no JSON.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from shoal.audit.trail import AUDIT_PRODUCT, AuditFiles, entry_time, lines, parse_entry, read
from shoal.config import Home

__all__ = ["AUDIT_SCHEMA", "as_arrow", "audit_table"]

AUDIT_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("node", pa.string()),
        ("who", pa.string()),
        ("action", pa.string()),
        ("product", pa.string()),
        ("detail", pa.string()),
        ("columns", pa.list_(pa.string())),
        ("rows", pa.int64()),
        ("fragment", pa.string()),
    ]
)


def as_arrow(home: Home) -> pa.Table:
    """The whole log as an Arrow table of `AUDIT_SCHEMA`, read from its file now."""
    return _to_arrow(read(home))


def _to_arrow(entries: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in AUDIT_SCHEMA.names}
    for entry in entries:
        detail = entry["detail"] if isinstance(entry["detail"], dict) else {}
        names, fragment = detail.get("columns"), detail.get("fragment")
        product = entry.get("product")
        columns["seq"].append(_int64(entry["seq"]))
        columns["time"].append(entry_time(entry))
        columns["node"].append(str(entry["node"]))
        columns["who"].append(str(entry["who"]))
        columns["action"].append(str(entry["action"]))
        columns["product"].append(None if product is None else str(product))
        columns["detail"].append(json.dumps(detail, sort_keys=True, ensure_ascii=False))
        listed = isinstance(names, list) and all(isinstance(n, str) for n in names)
        columns["columns"].append(names if listed else None)
        columns["rows"].append(_int64(detail.get("rows")))
        columns["fragment"].append(fragment if isinstance(fragment, str) else None)
    return pa.table(columns, schema=AUDIT_SCHEMA)


def _int64(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 63:
        return value
    return None


# Per entries file: its (size, mtime, inode), the bytes of complete lines read, the table.
_TABLES: dict[Path, tuple[tuple[int, int, int], int, pa.Table]] = {}
_TABLES_LOCK = threading.Lock()


def audit_table(home: Home) -> pa.Table:
    """The log as `as_arrow` gives it, for `<node>._audit` in SQL: kept between calls and
    extended by the lines appended since, so a query costs what was added, not the log."""
    files = AuditFiles.of(home)
    try:
        st = files.entries.stat()
    except FileNotFoundError:
        return AUDIT_SCHEMA.empty_table()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    origin = f"{home.settings.name}.{AUDIT_PRODUCT}"
    with _TABLES_LOCK:
        cached = _TABLES.get(files.entries)
        if cached is not None and cached[0] == stamp:
            return cached[2]
        # Entries are only ever appended (a torn tail is cut, never a complete line), so
        # the same file grown keeps the rows read; anything else is read again.
        if cached is not None and cached[0][2] == stamp[2] and cached[1] <= stamp[0]:
            _, length, table = cached
        else:
            length, table = 0, AUDIT_SCHEMA.empty_table()
        entries = []
        for number, line in lines(files.entries, length):
            entries.append(parse_entry(line, table.num_rows + number, origin))
            length += len(line) + 1
        table = pa.concat_tables([table, _to_arrow(entries)])
        if table.column(0).num_chunks > 64:
            table = table.combine_chunks()
        _TABLES[files.entries] = (stamp, length, table)
        return table
