"""`shoal demo`: a small business's mesh on this machine, and a guided tour of it.

Four node processes on free loopback ports: `hq` (the hub, with the product catalogue), the
stores `berlin` and `munich` (their orders) and `marketing` (its campaigns). Each publishes
generated retail data, then the tour asks cross-node questions — each time at a different
node, since any node answers — printing the plan and the answer. Without `--check` the mesh
keeps running with its URLs printed until Ctrl-C; with it, every answer is compared with
the same question answered over the generated files in one place, and the exit code says
whether all matched.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shoal.errors import ShoalError
from shoal.localmesh import LocalMesh
from shoal.mesh.tls import NodeTLS
from shoal.mesh.users import Profile, Users, write_profile
from shoal.meshdata import MESH_NODES, write_mesh_data
from shoal.node import Node
from shoal.tour import TOUR, check_answers, expected_answers

__all__ = ["run_demo"]

SHOWN_ROWS = 10


def run_demo(
    out: Console, *, keep: Path | None = None, check: bool = False, orders: int = 20_000
) -> bool:
    """Run the demo; gives True when every checked answer matched (always True unchecked)."""
    workdir = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    root = keep if keep is not None else workdir / "mesh"
    if root.exists() and any(root.iterdir()):
        raise ShoalError(f"{root} is not empty; give --keep a new folder")
    mesh = LocalMesh(root)
    try:
        out.print(f"[bold]Shoal demo[/bold]: a coffee chain's mesh of four nodes, in {root}")
        mesh.start(MESH_NODES, progress=lambda line: out.print(f"  {line}"))
        files = write_mesh_data(workdir / "files", orders_per_store=orders)
        for name, products in files.items():
            node = Node.open(root / name)  # CLI-style, beside the running server
            for product, path in products.items():
                result = node.publish(product, str(path))
                out.print(
                    f"  {name} published {name}.{product} v{result.version}: "
                    f"{result.rows_added:,} rows"
                )
        wanted = {f"{n}.{p}" for n, products in files.items() for p in products}
        mesh.wait_for_catalog(wanted)
        out.print("  every node's catalog lists every product\n")
        answers = _tour(out, mesh)
        matched = True
        if check:
            report = check_answers(expected_answers(files), answers)
            matched = all(line.endswith("ok") for line in report)
            for line in report:
                out.print(f"  {line}", markup=False)
            out.print("all answers match" if matched else "[red]some answers differ[/red]")
        else:
            _wait_for_ctrl_c(out, mesh, _admin_profile(mesh))
        return matched
    finally:
        codes = mesh.stop()
        stuck = [name for name, code in codes.items() if code != 0]
        if stuck:
            out.print(f"[yellow]nodes that did not stop cleanly: {', '.join(stuck)}[/yellow]")
        shutil.rmtree(workdir, ignore_errors=True)


def _tour(out: Console, mesh: LocalMesh) -> dict[str, pa.Table]:
    coordinators = list(mesh.nodes.values())
    answers: dict[str, pa.Table] = {}
    for index, question in enumerate(TOUR):
        at = coordinators[index % len(coordinators)]
        out.print(f"[bold]{question.title}[/bold]  (asked at {at.name})")
        out.print(f"  {question.why}", markup=False)
        out.print(f"  {question.sql}", markup=False)
        with at.mesh() as client:  # as the node asked, i.e. its owner
            plan = client.explain(question.sql)
            result = client.sql(question.sql).arrow()
        out.print(_indent(str(plan["text"])), markup=False)
        table = Table(*result.column_names)
        for row in result.slice(0, SHOWN_ROWS).to_pylist():
            table.add_row(*(Text("NULL" if v is None else str(v)) for v in row.values()))
        out.print(table)
        if result.num_rows > SHOWN_ROWS:
            out.print(f"  ... {result.num_rows - SHOWN_ROWS} more rows")
        out.print()
        answers[question.title] = result
    return answers


def _admin_profile(mesh: LocalMesh) -> Path:
    """A profile of an admin, `demo`, issued by the hub: what the tour's reader signs in
    with from another terminal (every node takes only members of its mesh)."""
    hub = next(iter(mesh.nodes.values()))
    node = Node.open(hub.home)
    token = Users(node.home, node.membership).add("demo", "admin", {}, "", 86400)
    path = mesh.root / "demo-admin.shoal-profile"
    ca = NodeTLS(hub.home).ca_pem().decode("ascii") if hub.http.startswith("https") else ""
    write_profile(path, Profile(hub.http, token, "demo", ca, hub.name))
    return path


def _wait_for_ctrl_c(out: Console, mesh: LocalMesh, profile: Path) -> None:
    out.print("[bold]The mesh keeps running.[/bold] Try, in another terminal:")
    for name, node in mesh.nodes.items():
        out.print(f"  {name:10} {node.http}   (flight {node.flight})")
    out.print(f"  export SHOAL_PROFILE={profile}   # an admin's profile, made by the hub")
    out.print('  shoal sql "SELECT _node, count(*) FROM orders GROUP BY 1"')
    out.print("  shoal nodes; shoal products --mesh")
    out.print("Press Ctrl-C to stop every node.")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            down = [n for n, node in mesh.nodes.items() if not node.running()]
            if down:
                out.print(f"[red]nodes stopped unexpectedly: {', '.join(down)}[/red]")
                return
    finally:
        signal.signal(signal.SIGINT, previous)
    out.print("\nstopping the mesh ...")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
