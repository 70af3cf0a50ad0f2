"""People, tokens and policies across real node processes: a user's token travels with each
fragment and the serving node applies that user's view; revocation reaches every node."""

from __future__ import annotations

import json
import stat

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from shoal.config import open_home
from shoal.crypto import generate_key
from shoal.errors import TokenError
from shoal.mesh.authority import Authority
from shoal.mesh.tls import NodeTLS, user_context
from shoal.mesh.tokens import issue_user_token, read_user_token

from .processes import build_mesh, stop_all, wait_until
from .processes import shoal as run_shoal

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

EMAILS = ["ann@shop.de", "bob@shop.de", "cem@example.com"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("users")
    nodes = build_mesh(root, ["hq", "berlin"])
    try:
        data = root / "customers.parquet"
        pq.write_table(
            pa.table({"id": [1, 2, 3], "email": EMAILS, "region": ["eu", "eu", "us"]}), data
        )
        run_shoal("publish", "customers", str(data), home=nodes["berlin"].home)
        contract = yaml.safe_load(
            run_shoal("contract", "show", "customers", home=nodes["berlin"].home).stdout
        )
        for column in contract["schema"][0]["properties"]:
            if column["name"] == "email":
                column["pii"] = True
        contract["version"] = "1.1.0"
        (root / "contract.yaml").write_text(yaml.safe_dump(contract))
        run_shoal(
            "contract", "set", "customers", str(root / "contract.yaml"), home=nodes["berlin"].home
        )
        policy = {"row_filters": [{"roles": ["analyst"], "where": "region = :region"}]}
        (root / "policy.yaml").write_text(yaml.safe_dump(policy))
        run_shoal(
            "policy", "set", "customers", str(root / "policy.yaml"), home=nodes["berlin"].home
        )
        for name, role, extra in (
            ("eve", "analyst", ["--attr", "region=eu"]),
            ("ada", "admin", []),
        ):
            run_shoal(
                "user",
                "add",
                name,
                "--role",
                role,
                *extra,
                "-o",
                str(root / f"{name}.profile"),
                home=nodes["hq"].home,
            )
        wait_until(lambda: "berlin.customers" in nodes["hq"].catalog(), what="the product at hq")
        yield nodes, root
    finally:
        stop_all(nodes)


SQL = "SELECT id, email, region FROM berlin.customers ORDER BY id"


def _sql(root, *args: str, check: bool = True):
    return run_shoal("sql", SQL, "--format", "json", *args, check=check)


def test_profiles_are_private_files(mesh):
    _, root = mesh
    mode = stat.S_IMODE((root / "eve.profile").stat().st_mode)
    assert mode == 0o600


def test_each_caller_gets_their_view_from_the_serving_node(mesh):
    nodes, root = mesh
    eve = json.loads(_sql(root, "--profile", str(root / "eve.profile")).stdout)
    assert [r["id"] for r in eve] == [1, 2]  # her region only
    assert all(r["email"] not in EMAILS and len(r["email"]) == 64 for r in eve)
    ada = json.loads(_sql(root, "--profile", str(root / "ada.profile")).stdout)
    assert [r["email"] for r in ada] == EMAILS  # admins see everything
    hq_home = str(nodes["hq"].home)
    member = json.loads(_sql(root, "--at", nodes["hq"].http, "--home", hq_home).stdout)
    assert [r["id"] for r in member] == [1, 2, 3]
    assert not {r["email"] for r in member} & set(EMAILS)  # pii masked for other nodes
    # Nobody at all: refused at the door, over TLS checked against the mesh CA.
    ca = NodeTLS(nodes["hq"].home).ca_pem()
    with httpx.Client(verify=user_context(ca, None)) as stranger:
        refused = stranger.post(nodes["hq"].http + "/api/v1/query", json={"sql": SQL})
    assert refused.status_code == 403 and refused.json()["error"] == "TokenError"
    assert "members of its mesh" in refused.json()["message"]
    hq_cli = json.loads(_sql(root, "--home", str(nodes["hq"].home)).stdout)
    assert not {r["email"] for r in hq_cli} & set(EMAILS)  # another node's people: masked
    owner = json.loads(_sql(root, "--home", str(nodes["berlin"].home)).stdout)
    assert [r["email"] for r in owner] == EMAILS  # the owner's own home sees its data
    # The same hashes everywhere, so masked keys still join across nodes.
    assert [r["email"] for r in eve] == [r["email"] for r in member][:2]


def test_forged_and_expired_tokens_are_refused(mesh, tmp_path):
    nodes, root = mesh
    hub = open_home(nodes["hq"].home)
    forged, _ = issue_user_token(generate_key(), "hq", "mallory", "admin", ttl_seconds=3600)
    expired, _ = issue_user_token(hub.key(), "hq", "old", "admin", ttl_seconds=-3600)
    for token, message in ((forged, "not signed by the expected key"), (expired, "expired")):
        profile = tmp_path / f"{message[:3]}.profile"
        ca = NodeTLS(nodes["hq"].home).ca_pem().decode()
        profile.write_text(json.dumps({"endpoint": nodes["hq"].http, "token": token, "ca": ca}))
        result = _sql(root, "--profile", str(profile), check=False)
        assert result.returncode == 6, result.stderr
        assert message in result.stderr
    with pytest.raises(TokenError):
        read_user_token("not.a.token", hub.key().public)
    # A profile whose CA is not the mesh's: the endpoint's certificate does not verify.
    other = tmp_path / "other-ca.profile"
    foreign = NodeTLS(tmp_path / "elsewhere")
    Authority.create(foreign.folder, "elsewhere")
    good = json.loads((root / "eve.profile").read_text())
    other.write_text(json.dumps(good | {"ca": foreign.ca_path.read_text()}))
    result = _sql(root, "--profile", str(other), check=False)
    assert result.returncode == 8 and "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_revoking_a_user_stops_their_token_everywhere(mesh):
    nodes, root = mesh
    profile = root / "rex.profile"
    run_shoal("user", "add", "rex", "--role", "analyst", "-o", str(profile), home=nodes["hq"].home)
    assert _sql(root, "--profile", str(profile)).returncode == 0
    run_shoal("user", "revoke", "rex", home=nodes["hq"].home)
    # Also at berlin, which serves the data: its check uses the hub's signed revocations.
    for node in nodes.values():
        wait_until(
            lambda node=node: (
                _sql(root, "--profile", str(profile), "--at", node.http, check=False).returncode
                == 6
            ),
            timeout=15,
            what=f"revocation at {node.name}",
        )
    listed = run_shoal("user", "list", "--json", home=nodes["hq"].home).stdout
    assert '"revoked": true' in listed


def test_user_commands_refuse_bad_input(mesh, tmp_path):
    nodes, _ = mesh
    cases = [
        (["user", "add", "Bad Name", "--role", "analyst"], "invalid user name"),
        (["user", "add", "x", "--role", "owner"], "needs --node"),
        (["user", "add", "x", "--role", "analyst", "--attr", "nokey"], "KEY=VALUE"),
        (["user", "add", "x", "--role", "analyst", "--expires", "forever"], "invalid duration"),
        (["user", "revoke", "nobody"], "no user 'nobody'"),
    ]
    for args, message in cases:
        result = (
            run_shoal(*args, "-o", str(tmp_path / "p"), home=nodes["hq"].home, check=False)
            if args[1] == "add"
            else run_shoal(*args, home=nodes["hq"].home, check=False)
        )
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert not (tmp_path / "p").exists()
    refused = run_shoal(
        "user", "add", "y", "--role", "analyst", home=nodes["berlin"].home, check=False
    )
    assert refused.returncode == 6 and "only the hub" in refused.stderr
