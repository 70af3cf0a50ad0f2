"""Talking to other nodes: signed HTTP calls for the control plane, Arrow Flight for data.

Every call carries a request token signed with this node's key (see `tokens`), naming the
caller and binding the call, so the receiving node knows which member asks.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as flight

from shoal.config import Home
from shoal.errors import ShoalError, TokenError, UnavailableError, UsageError
from shoal.mesh.health import PeerHealth
from shoal.mesh.membership import Member, Membership
from shoal.mesh.tls import NodeTLS, check_ca, server_name, user_context
from shoal.mesh.tokens import sign_request
from shoal.mesh.wire import AUTH_SCHEME, error_from_dict
from shoal.query import Fragment

__all__ = [
    "FRAGMENT_PATH",
    "FragmentClient",
    "ask_hub_to_join",
    "fetch_ca",
    "fragment_from_wire",
    "fragment_to_wire",
    "hub_answer",
    "signed_headers",
]

FRAGMENT_PATH = "/fragment"


def fetch_ca(hub_url: str, fingerprint: str) -> bytes:
    """The mesh CA certificate from the hub, checked against the join token's fingerprint.

    Fetched before any trust exists (no certificate is checked on this one call); the
    fingerprint the hub signed into the token is what makes the answer trustworthy.
    """
    try:
        response = httpx.get(f"{hub_url}/api/v1/mesh/ca", timeout=30, verify=False)  # noqa: S501
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach the hub at {hub_url}: {exc}") from exc
    if response.status_code >= 400:
        raise UsageError(f"the hub gave no CA certificate: HTTP {response.status_code}")
    return check_ca(response.content, fingerprint)


def ask_hub_to_join(
    hub_url: str,
    token: str,
    public_key: bytes,
    tls_public_key: bytes = b"",
    ca_pem: bytes | None = None,
    hub: str | None = None,
) -> dict[str, Any]:
    """Redeem a join token at the hub; gives its answer (hub, hub_key, members and the TLS
    certificate). Over https the hub must show a certificate of `ca_pem` for `hub`."""
    body = {"token": token, "public_key": base64.b64encode(public_key).decode()}
    if tls_public_key:
        body["tls_public_key"] = tls_public_key.decode("ascii")
    verify: Any = True
    extensions: dict[str, Any] = {}
    if hub_url.startswith("https://"):
        if ca_pem is None:
            raise TokenError("this join token names no mesh CA, so the hub cannot be checked")
        verify = user_context(ca_pem, hub)
        if hub is not None:
            extensions["sni_hostname"] = server_name(hub)
    try:
        with httpx.Client(verify=verify, timeout=30) as client:
            response = client.post(f"{hub_url}/api/v1/mesh/join", json=body, extensions=extensions)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach the hub at {hub_url}: {exc}") from exc
    data = hub_answer(response)
    if not {"hub", "hub_key", "members"} <= data.keys():
        raise UsageError("the hub's answer is not a join answer; is the URL a Shoal hub?")
    return data


def hub_answer(response: httpx.Response) -> dict[str, Any]:
    """The hub's JSON answer; its error, as the same ShoalError, when it refused."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        raise error_from_dict(data, fallback=f"the hub refused: HTTP {response.status_code}")
    if not isinstance(data, dict):
        raise UsageError("the hub's answer is not a JSON object; is the URL a Shoal hub?")
    return data


def signed_headers(
    home: Home, audience: str, method: str, path: str, body: bytes = b""
) -> dict[str, str]:
    """Headers that identify this node to `audience` for one call."""
    token = sign_request(home.key(), home.settings.name, audience, method, path, body)
    return {"authorization": f"{AUTH_SCHEME} {token}"}


class FragmentClient:
    """Runs query fragments on the peers that hold the data, over Arrow Flight."""

    def __init__(
        self,
        home: Home,
        membership: Membership,
        health: PeerHealth | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.home = home
        self.membership = membership
        self.health = health
        self.timeout = timeout
        self._clients: dict[str, flight.FlightClient] = {}
        self._lock = threading.Lock()
        self.tls = NodeTLS(home.root)

    def run(
        self, fragment: Fragment, holder: str, user_token: str = ""
    ) -> tuple[pa.Table, float | None]:
        """Run `fragment` at peer `holder` for the user whose token is given (none: for this
        node itself): its whole result, and the seconds the peer says its engine spent on
        it (None if it did not say). UnavailableError names the node if it fails."""
        what = f"{fragment.owner}.{fragment.product}"
        member = self.membership.member(holder)
        if self.health is not None and self.health.is_down(holder):
            raise UnavailableError(
                f"node '{holder}' is down; cannot read {what}",
                hint="start that node again, or give its products replicas "
                "(`shoal replicate NAME --replicas N` on the owner)",
            )
        if not member.flight:
            raise UnavailableError(
                f"node '{holder}' has never announced its endpoints; cannot read {what}",
                hint="start it with `shoal serve` on its home",
            )
        request: dict[str, Any] = {"fragment": fragment_to_wire(fragment)}
        if user_token:
            request["user"] = user_token  # the serving node checks it itself
        ticket = json.dumps(request).encode()
        headers = signed_headers(self.home, holder, "DOGET", FRAGMENT_PATH, ticket)
        options = flight.FlightCallOptions(
            timeout=self.timeout,
            headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        )
        try:
            stream = self._client(member).do_get(flight.Ticket(ticket), options)
            table, node_seconds = _read_timed(stream)
        except flight.FlightTimedOutError as exc:
            raise UnavailableError(
                f"node '{holder}' did not answer within {self.timeout:g} s for {what}"
            ) from exc
        except flight.FlightUnavailableError as exc:
            self._forget(member)
            raise UnavailableError(f"node '{holder}' cannot be reached for {what}") from exc
        except flight.FlightError as exc:
            raise _remote_error(exc, holder, what) from exc
        return table, node_seconds

    def _client(self, member: Member) -> flight.FlightClient:
        with self._lock:
            client = self._clients.get(member.flight)
            if client is None:
                options: dict[str, Any] = {}
                if member.flight.startswith("grpc+tls://"):
                    options = self.tls.flight_client_options(member.name)
                client = flight.FlightClient(member.flight, **options)
                self._clients[member.flight] = client
            return client

    def _forget(self, member: Member) -> None:
        # Not closed here: other threads may be mid-call on the same client, and closing it
        # under them turns their own failover into "FlightClient is closed". The next call
        # makes a new client; this one closes when its last user drops it.
        with self._lock:
            self._clients.pop(member.flight, None)

    def close(self) -> None:
        """Close every connection (also after a renewal: new ones show the new certificate)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def fragment_to_wire(fragment: Fragment) -> dict[str, Any]:
    """What a fragment ticket carries: what to run, and the fragments to fetch first."""
    wire: dict[str, Any] = {
        "owner": fragment.owner,
        "product": fragment.product,
        "sql": fragment.sql,
        "version": fragment.version,
        "also": [[name, version] for name, version in fragment.also],
    }
    if fragment.inputs:
        wire["inputs"] = [
            {
                **fragment_to_wire(shipped),
                "id": shipped.id,
                "holders": list(shipped.holders),
                "columns": list(shipped.columns),
            }
            for shipped in fragment.inputs
        ]
    return wire


def fragment_from_wire(wire: dict[str, Any]) -> Fragment:
    """An input fragment from a ticket the Flight server already checked the shape of."""
    return Fragment(
        id=wire["id"],
        owner=wire["owner"],
        product=wire["product"],
        holders=tuple(wire["holders"]),
        sql=wire["sql"],
        columns=tuple(wire["columns"]),
        filters=(),
        version=wire.get("version"),
        also=tuple((name, version) for name, version in wire.get("also", [])),
    )


def _read_timed(stream: flight.FlightStreamReader) -> tuple[pa.Table, float | None]:
    """Every batch of a fragment's stream, and the last engine time its node reported."""
    batches = []
    node_seconds = None
    while True:
        try:
            chunk = stream.read_chunk()
        except StopIteration:
            break
        if chunk.data is not None:
            batches.append(chunk.data)
        if chunk.app_metadata is not None:
            node_seconds = _reported_seconds(chunk.app_metadata.to_pybytes())
    return pa.Table.from_batches(batches, schema=stream.schema), node_seconds


def _reported_seconds(metadata: bytes) -> float | None:
    try:
        value = json.loads(metadata).get("node_seconds")
    except (ValueError, AttributeError):
        return None  # a peer of another version, or noise: the figure is only informative
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _remote_error(exc: flight.FlightError, holder: str, what: str) -> ShoalError:
    """The ShoalError the peer raised, prefixed with where it happened."""
    extra = getattr(exc, "extra_info", b"") or b""
    try:
        data: Any = json.loads(extra)
    except ValueError:
        data = None
    error = error_from_dict(data, fallback=str(exc).split("\n")[0])
    error.message = f"node '{holder}' failed reading {what}: {error.message}"
    error.args = (error.message,)
    return error
