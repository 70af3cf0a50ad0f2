"""The mesh commands of `shoal`: serve, invite, join, node revoke, nodes, explain.

Registered on the one `shoal` app by `shoal.cli`; like it, they only parse, call and render.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from shoal.cli import (
    AtOption,
    HomeOption,
    JsonOption,
    ProfileOption,
    app,
    err,
    handles_errors,
    mesh_for,
    open_node,
    out,
    print_json,
)
from shoal.config import resolve_home
from shoal.mesh.invites import Invites, parse_duration
from shoal.node import Node
from shoal.server.runtime import DEFAULT_FLIGHT, DEFAULT_HTTP, read_run_file, serve

__all__: list[str] = []


@app.command("serve")
@handles_errors
def serve_command(
    http: Annotated[
        str, typer.Option("--http", help="Control plane address HOST:PORT (port 0: any free).")
    ] = DEFAULT_HTTP,
    flight: Annotated[
        str, typer.Option("--flight", help="Arrow Flight data plane address HOST:PORT.")
    ] = DEFAULT_FLIGHT,
    advertise: Annotated[
        str | None,
        typer.Option("--advertise", help="HTTP URL other nodes use to reach this one."),
    ] = None,
    advertise_flight: Annotated[
        str | None,
        typer.Option("--advertise-flight", help="Flight URL other nodes use (grpc://HOST:PORT)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Run this node: HTTP control plane, Arrow Flight data plane and mesh sync.

    The first node to serve becomes the hub of a new mesh. Stops cleanly on Ctrl-C or
    SIGTERM (requests still running after 8 s are dropped); SIGUSR1 prints every thread's
    stack. CLI commands on this home keep working while it runs.
    """

    # A server works on its own (pulls, refusals, repairs): say what it does, with times.
    # `--debug` already set everything to DEBUG.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    def ready(info: dict[str, Any]) -> None:
        out.print(
            f"node '{info['node']}' serving: http {info['http']}  flight {info['flight']}"
            "  (Ctrl-C stops)"
        )

    serve(
        resolve_home(home),
        http=http,
        flight=flight,
        advertise=advertise,
        advertise_flight=advertise_flight,
        on_ready=ready,
    )
    out.print("stopped")


@app.command()
@handles_errors
def invite(
    name: Annotated[str, typer.Argument(help="Name of the node to let in.")],
    region: Annotated[
        str | None, typer.Option("--region", help="Its region [default: the hub's].")
    ] = None,
    expires: Annotated[
        str, typer.Option("--expires", help="How long the token stays valid: 90s, 15m, 24h, 7d.")
    ] = "24h",
    home: HomeOption = None,
) -> None:
    """On the hub: make a one-time join token for a new node (printed as the last line)."""
    ttl = parse_duration(expires)
    node = open_node(home)
    token, expiry = Invites(node.home, node.membership).issue(
        name, region or node.home.settings.region, ttl
    )
    when = datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds")
    err.print(
        f"join token for node '{name}' (valid once, until {when}). On the new machine run:\n"
        f"  shoal join HUB_URL TOKEN --home DIR"
    )
    out.print(token, markup=False)


node_app = typer.Typer(help="The mesh's nodes (changes on the hub).", no_args_is_help=True)
app.add_typer(node_app, name="node")


@node_app.command("revoke")
@handles_errors
def node_revoke(
    name: Annotated[str, typer.Argument(help="The node to put out of the mesh.")],
    home: HomeOption = None,
) -> None:
    """On the hub: revoke a node everywhere: within a few pings every node refuses its calls,
    its certificate and its products; it cannot join again under that name."""
    hub = open_node(home)
    hub.membership.revoke_node(name)
    out.print(f"node '{name}' is revoked; every node learns it from the hub's next announcement")


@app.command()
@handles_errors
def join(
    hub_url: Annotated[str, typer.Argument(help="The hub's URL, e.g. https://hq:7400.")],
    token: Annotated[str, typer.Argument(help="The token `shoal invite` printed on the hub.")],
    home: HomeOption = None,
) -> None:
    """Create this node's home from a join token and register it with the hub."""
    root = resolve_home(home)
    node = Node.join(root, hub_url, token)
    hub = node.membership.hub
    members = ", ".join(sorted(node.membership.members()))
    out.print(
        f"node '{node.name}' (region {node.home.settings.region}) joined the mesh of hub "
        f"'{hub}'; "
        f"members: {members}. Start it with `shoal serve --home {root}`."
    )


@app.command()
@handles_errors
def nodes(
    as_json: JsonOption = False,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """List the mesh's nodes: region, endpoints, state, last seen, products held.

    States come from the running node's pings; without one they show as unknown.
    """
    if at is None and profile is None:
        running = read_run_file(resolve_home(home))
        at = running["http"] if running else None
    with mesh_for(at, home, profile) as mesh:
        rows = mesh.nodes()
    if as_json:
        print_json(rows)
        return
    table = Table("node", "region", "http", "flight", "state", "last seen", "products")
    now = time.time()
    for row in rows:
        seen = row.get("last_seen")
        ago = (
            "now"
            if row["state"] == "self"
            else ("never" if not seen else f"{now - seen:.0f} s ago")
        )
        name = row["name"] + (" (hub)" if row.get("hub") else "")
        table.add_row(
            name,
            row["region"],
            row["http"] or "-",
            row["flight"] or "-",
            row["state"],
            ago,
            str(row["products"]),
        )
    out.print(table)


@app.command()
@handles_errors
def explain(
    query: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    analyze: Annotated[
        bool,
        typer.Option(
            "--analyze",
            help="Run the query (rows are discarded) and show per fragment the rows and "
            "bytes moved, cache hit or miss, node and transfer time, and time per stage.",
        ),
    ] = False,
    as_json: JsonOption = False,
    at: AtOption = None,
    profile: ProfileOption = None,
    home: HomeOption = None,
) -> None:
    """Show how a query is split: fragments per node, what is pushed down, what is left."""
    with mesh_for(at, home, profile) as mesh:
        plan = mesh.explain(query, analyze=analyze)
    if as_json:
        print_json({**plan["plan"], "analysis": plan["analysis"]} if analyze else plan["plan"])
    else:
        out.print(plan["text"], markup=False)
