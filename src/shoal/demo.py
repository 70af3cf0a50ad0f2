"""`shoal demo`: a fresh node, generated retail data published, a few questions answered.

The mesh issue turns this into several nodes; today it shows one store's back office.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shoal.node import Node
from shoal.sampledata import write_retail_files

__all__ = ["QUESTIONS", "run_demo"]

QUESTIONS = (
    (
        "Revenue per store",
        "SELECT store, count(*) AS orders, round(sum(amount), 2) AS revenue "
        "FROM demo.orders GROUP BY store ORDER BY revenue DESC",
    ),
    (
        "Best-selling categories (a join across two products)",
        "SELECT c.category, sum(o.quantity) AS units, round(sum(o.amount), 2) AS revenue "
        "FROM orders o JOIN catalogue c USING (product_id) "
        "GROUP BY c.category ORDER BY revenue DESC",
    ),
    (
        "Top customers",
        "SELECT cu.name, cu.city, round(sum(o.amount), 2) AS spent "
        "FROM orders o JOIN customers cu USING (customer_id) "
        "GROUP BY ALL ORDER BY spent DESC LIMIT 5",
    ),
)


def run_demo(out: Console, keep: Path | None = None, orders: int = 20_000) -> Path | None:
    """Build the demo node (in `keep`, or a temporary folder removed afterwards)."""
    workdir = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    home = keep if keep is not None else workdir / "home"
    try:
        out.print(f"[bold]Shoal demo[/bold]: a node for a coffee chain, home {home}")
        node = Node.init(home, "demo", "eu-de")
        files = write_retail_files(workdir / "files", orders=orders)
        for product, path in files.items():
            result = node.publish(product, str(path))
            out.print(
                f"  published demo.{product} v{result.version} from {path.name}: "
                f"{result.rows_added:,} rows, contract {result.contract_version} "
                f"({'inferred' if result.contract_inferred else 'given'})"
            )
        more = node.publish("orders", str(files["orders"]), mode="upsert", key=["order_id"])
        out.print(
            f"  re-published demo.orders as an upsert: v{more.version}, "
            f"{more.rows_total:,} rows (same keys, no duplicates)"
        )
        for title, sql in QUESTIONS:
            out.print(f"\n[bold]{title}[/bold]\n  {sql}")
            result = node.sql(sql).read_all()
            table = Table(*result.column_names)
            for row in result.to_pylist():
                table.add_row(*(Text(str(v)) for v in row.values()))
            out.print(table)
        out.print(
            "\nTry it yourself: shoal --help; "
            + (f"the node stays in {home}" if keep else "rerun with --keep DIR to keep the node")
        )
        return home if keep is not None else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
