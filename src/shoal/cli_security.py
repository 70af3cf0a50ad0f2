"""The security commands of `shoal`: users and their profiles, product policies and grants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from shoal.cli import HomeOption, JsonOption, app, err, handles_errors, open_node, out, print_json
from shoal.errors import ConflictError, UsageError
from shoal.mesh.invites import parse_duration
from shoal.mesh.tls import NodeTLS
from shoal.mesh.users import Profile, Users, write_profile
from shoal.policy import load_policy, parse_attrs, parse_rules, policy_summary

users_app = typer.Typer(help="People and services of the mesh (on the hub).", no_args_is_help=True)
policy_app = typer.Typer(help="Who may see what of a product (on its owner).", no_args_is_help=True)
app.add_typer(users_app, name="user")
app.add_typer(policy_app, name="policy")


@users_app.command("add")
@handles_errors
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name (lowercase).")],
    role: Annotated[
        str, typer.Option("--role", help="admin, owner, analyst, auditor, or a custom role.")
    ],
    attr: Annotated[
        list[str] | None,
        typer.Option("--attr", help="KEY=VALUE, used by row filters (repeat for more)."),
    ] = None,
    node: Annotated[
        str, typer.Option("--node", help="The node the user belongs to (needed for owner).")
    ] = "",
    expires: Annotated[str, typer.Option("--expires", help="Token lifetime, e.g. 90d.")] = "90d",
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Profile file [default ./NAME.shoal-profile]."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="URL the profile points at [default: the hub's]."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Issue a signed token for a person or service and write their profile (mode 0600)."""
    hub = open_node(home)
    users = Users(hub.home, hub.membership)
    target = output if output is not None else Path(f"{name}.shoal-profile")
    if target.exists():
        raise ConflictError(f"{target} exists; choose another -o or remove it first")
    url = endpoint or hub.membership.member(hub.name).http
    if not url:
        raise UsageError("the hub has not served yet; give --endpoint https://HOST:PORT")
    ttl = parse_duration(expires, most_days=3650)
    tls = NodeTLS(hub.home.root)
    ca = tls.ca_pem().decode("ascii") if tls.ready() else ""
    token = users.add(name, role, parse_attrs(attr or []), node, ttl)
    # The profile names the node at its endpoint only when that is the hub's own URL.
    at_node = hub.name if endpoint is None else ""
    write_profile(target, Profile(url, token, name, ca, at_node))
    out.print(f"user '{name}' ({role}) can connect with --profile {target}")


@users_app.command("revoke")
@handles_errors
def user_revoke(
    name: Annotated[str, typer.Argument(help="The user whose tokens stop working.")],
    home: HomeOption = None,
) -> None:
    """Revoke every token of a user, at every node within a few seconds."""
    hub = open_node(home)
    revoked = Users(hub.home, hub.membership).revoke(name)
    out.print(f"revoked {len(revoked)} token(s) of '{name}'; every node refuses them")


@users_app.command("list")
@handles_errors
def user_list(as_json: JsonOption = False, home: HomeOption = None) -> None:
    """List the mesh's users (on the hub)."""
    hub = open_node(home)
    rows = Users(hub.home, hub.membership).list()
    if as_json:
        print_json(rows)
        return
    table = Table("user", "role", "node", "attributes", "tokens", "state")
    for row in rows:
        attrs = ", ".join(f"{k}={v}" for k, v in row["attrs"].items())
        state = "revoked" if row["revoked"] else "active"
        table.add_row(row["name"], row["role"], row["node"], attrs, str(row["tokens"]), state)
    out.print(table)


@policy_app.command("show")
@handles_errors
def policy_show(
    product: Annotated[str, typer.Argument(help="One of this node's products.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Print a product's policy (empty: its contract's classifications decide)."""
    node = open_node(home)
    policy = node.policy(product)
    if as_json:
        print_json(policy.model_dump(exclude_defaults=True))
        return
    text = policy_summary(policy)
    out.print(text if text != "{}" else "no policy: the contract's classifications decide")


@policy_app.command("set")
@handles_errors
def policy_set(
    product: Annotated[str, typer.Argument(help="One of this node's products.")],
    file: Annotated[Path, typer.Argument(help="The policy (YAML).")],
    home: HomeOption = None,
) -> None:
    """Replace a product's policy with the one in FILE (checked against the product)."""
    node = open_node(home)
    if not file.is_file():
        raise UsageError(f"no policy file {file}")
    node.set_policy(product, load_policy(file))
    out.print(f"{node.name}.{product}: policy set")


@app.command()
@handles_errors
def grant(
    role: Annotated[str, typer.Argument(help="The role to let in.")],
    product: Annotated[str, typer.Argument(help="One of this node's products.")],
    columns: Annotated[
        str, typer.Option("--columns", help="Comma-separated confidential columns (all if none).")
    ] = "",
    home: HomeOption = None,
) -> None:
    """Let a role read a product, its confidential columns too."""
    node = open_node(home)
    chosen = [c.strip() for c in columns.split(",") if c.strip()]
    node.grant(role, product, chosen)
    out.print(f"role '{role}' may read {node.name}.{product}" + (f" ({columns})" if chosen else ""))


@app.command()
@handles_errors
def revoke(
    role: Annotated[str, typer.Argument(help="The role whose grant ends.")],
    product: Annotated[str, typer.Argument(help="One of this node's products.")],
    home: HomeOption = None,
) -> None:
    """Take back a role's grant on a product."""
    node = open_node(home)
    node.revoke_grant(role, product)
    err.print(f"role '{role}' no longer has a grant on {node.name}.{product}", markup=False)


rules_app = typer.Typer(
    help="Mesh-wide rules no product's policy can open up (set on the hub).",
    no_args_is_help=True,
)
app.add_typer(rules_app, name="rules")


@rules_app.command("show")
@handles_errors
def rules_show(as_json: JsonOption = False, home: HomeOption = None) -> None:
    """Print the mesh-wide rules in force at this node (as the hub signed them)."""
    rules = open_node(home).mesh_rules().model_dump(exclude_defaults=True)
    if as_json:
        print_json(rules)
        return
    out.print(
        yaml.safe_dump(rules, sort_keys=True).strip() if rules else "no mesh rules", markup=False
    )


@rules_app.command("set")
@handles_errors
def rules_set(
    file: Annotated[Path, typer.Argument(help="The rules (YAML): readers, floors.")],
    home: HomeOption = None,
) -> None:
    """On the hub: replace the mesh-wide rules; every node applies them within a few pings."""
    node = open_node(home)
    if not file.is_file():
        raise UsageError(f"no rules file {file}")
    node.membership.set_rules(parse_rules(file.read_bytes(), str(file)))
    out.print("mesh rules set; every node applies them from the hub's next announcement")
