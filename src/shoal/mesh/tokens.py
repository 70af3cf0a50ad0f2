"""The signed statements nodes exchange, as EdDSA JSON Web Tokens (PyJWT does the crypto).

* **Join token**: the hub lets one new node in, with a fixed name and region, once, until it
  expires. It names the hub's key id so the new node can tell it reached the right hub.
* **Certificate**: the hub vouches that a node name, region and public key belong together.
* **Announcement**: a node states its own endpoints, signed with its own key, so any peer
  can pass it on and every receiver can still check it.
* **Request token**: every call between nodes carries one, naming the caller and binding the
  method, path and body hash, valid for a minute. The security issue adds the checks on
  what a caller may do; the plumbing that says who calls is here.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shoal.crypto import NodeKey, key_id_of, public_key_from_bytes
from shoal.errors import TokenError
from shoal.names import is_valid_name

__all__ = [
    "Announcement",
    "Certificate",
    "JoinClaims",
    "RequestClaims",
    "SeenRequests",
    "UserClaims",
    "body_hash",
    "issue_join_token",
    "issue_user_token",
    "peek_join_token",
    "read_announcement",
    "read_certificate",
    "read_join_token",
    "read_request_token",
    "read_user_token",
    "request_caller",
    "sign_announcement",
    "sign_certificate",
    "sign_request",
]

_ALGORITHM = "EdDSA"
MAX_TOKEN_CHARS = 65536  # an announcement lists every replica its node holds
REQUEST_TOKEN_SECONDS = 60
CLOCK_LEEWAY_SECONDS = 30


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def body_hash(body: bytes) -> str:
    return _b64(hashlib.sha256(body).digest())


def _encode(claims: dict[str, Any], key: NodeKey) -> str:
    return jwt.encode(claims, key.private_key, algorithm=_ALGORITHM, headers={"kid": key.key_id})


def _decode(
    token: str, public: Ed25519PublicKey, *, purpose: str, audience: str | None = None
) -> dict[str, Any]:
    """Check signature, expiry and purpose; every failure is a TokenError naming `purpose`."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"the {purpose} is missing or too long")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public,
            algorithms=[_ALGORITHM],
            audience=audience,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": ["typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError(f"the {purpose} has expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError(f"the {purpose} is not signed by the expected key (forged?)") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"the {purpose} is not valid: {exc}") from exc
    if claims.get("typ") != purpose.replace(" ", "-"):
        raise TokenError(f"this token is not a {purpose}")
    return claims


def _peek(token: str, purpose: str) -> dict[str, Any]:
    """Read claims without checking the signature (only to learn whom to ask)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"the {purpose} is missing or too long")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, options={"verify_signature": False}, algorithms=[_ALGORITHM]
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"this is not a {purpose}: {exc}") from exc
    return claims


# -- join tokens --------------------------------------------------------------------------
@dataclass(frozen=True)
class JoinClaims:
    name: str
    region: str
    hub: str
    hub_key_id: str
    token_id: str
    expires: int
    ca: str = ""  # SHA-256 of the mesh CA certificate: the joining node pins it


def issue_join_token(
    hub_key: NodeKey, hub: str, name: str, region: str, ttl_seconds: int, ca: str = ""
) -> tuple[str, JoinClaims]:
    """Sign a one-time invitation for node `name` in `region`, valid for `ttl_seconds`;
    `ca` is the mesh CA's fingerprint, so the new node trusts the right CA from the start."""
    now = int(time.time())
    claims = JoinClaims(
        name, region, hub, hub_key.key_id, secrets.token_hex(16), now + ttl_seconds, ca
    )
    token = _encode(
        {
            "typ": "join-token",
            "sub": name,
            "region": region,
            "iss": hub,
            "hub_kid": claims.hub_key_id,
            "jti": claims.token_id,
            "iat": now,
            "exp": claims.expires,
            "ca": ca,
        },
        hub_key,
    )
    return token, claims


def _join_claims(claims: dict[str, Any]) -> JoinClaims:
    try:
        result = JoinClaims(
            str(claims["sub"]),
            str(claims["region"]),
            str(claims["iss"]),
            str(claims["hub_kid"]),
            str(claims["jti"]),
            int(claims["exp"]),
            str(claims.get("ca", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError("the join token lacks a name, region, hub or id") from exc
    if result.ca and (len(result.ca) != 64 or not all(c in "0123456789abcdef" for c in result.ca)):
        raise TokenError("the join token's CA fingerprint is not a SHA-256 hex digest")
    if not is_valid_name(result.name) or not is_valid_name(result.hub):
        raise TokenError("the join token names an invalid node or hub")
    return result


def peek_join_token(token: str) -> JoinClaims:
    """What a token says, unchecked: the joining node learns its name before asking the hub."""
    claims = _peek(token, "join token")
    if claims.get("typ") != "join-token":
        raise TokenError("this token is not a join token")
    return _join_claims(claims)


def read_join_token(token: str, hub_public: Ed25519PublicKey) -> JoinClaims:
    """Check a join token's signature and expiry (the hub checks one-time use itself)."""
    return _join_claims(_decode(token, hub_public, purpose="join token"))


# -- certificates -------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificate:
    name: str
    region: str
    public_key: bytes
    is_hub: bool
    token: str

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)


def sign_certificate(
    hub_key: NodeKey, hub: str, name: str, region: str, public_key: bytes
) -> Certificate:
    """The hub vouches for a member: name, region and public key belong together."""
    token = _encode(
        {
            "typ": "certificate",
            "iss": hub,
            "sub": name,
            "region": region,
            "key": _b64(public_key),
            "hub": name == hub,
            "iat": int(time.time()),
        },
        hub_key,
    )
    return Certificate(name, region, public_key, name == hub, token)


def read_certificate(token: str, hub_public: Ed25519PublicKey) -> Certificate:
    claims = _decode(token, hub_public, purpose="certificate")
    try:
        name, region = str(claims["sub"]), str(claims["region"])
        public_key = _unb64(str(claims["key"]))
        is_hub = bool(claims["hub"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError("the certificate lacks a name, region or key") from exc
    if not is_valid_name(name) or len(public_key) != 32:
        raise TokenError("the certificate names an invalid node or key")
    return Certificate(name, region, public_key, is_hub, token)


# -- announcements ------------------------------------------------------------------------
@dataclass(frozen=True)
class Announcement:
    name: str
    http: str
    flight: str
    at: float
    token: str
    # The replicas this node holds, verified:
    # `owner.product` -> (tree size, Delta version, product version).
    holds: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    # Only the hub's count: the ids of user tokens it revoked, and the nodes.
    revoked: frozenset[str] = frozenset()
    revoked_nodes: frozenset[str] = frozenset()
    # Only the hub's counts: the mesh-wide policy rules (see `policy.MeshRules`), as data.
    rules: Mapping[str, Any] = field(default_factory=dict)


def sign_announcement(
    key: NodeKey,
    name: str,
    http: str,
    flight: str,
    holds: Mapping[str, tuple[int, int, int]] | None = None,
    revoked: frozenset[str] | None = None,
    revoked_nodes: frozenset[str] | None = None,
    rules: Mapping[str, Any] | None = None,
) -> Announcement:
    """A node states where it listens and which replicas it holds (and the hub, which user
    tokens and nodes it revoked); signed by itself so peers can relay it."""
    at = time.time()
    held = {k: [int(n) for n in counts] for k, counts in sorted((holds or {}).items())}
    claims: dict[str, Any] = {
        "typ": "announcement",
        "iss": name,
        "http": http,
        "flight": flight,
        "at": at,
    }
    if held:
        claims["holds"] = held
    if revoked:
        claims["revoked"] = sorted(revoked)
    if revoked_nodes:
        claims["revoked_nodes"] = sorted(revoked_nodes)
    if rules:
        claims["rules"] = dict(rules)
    token = _encode(claims, key)
    return Announcement(
        name,
        http,
        flight,
        at,
        token,
        _holds(held),
        _revoked(claims),
        _revoked_nodes(claims),
        _rules(claims),
    )


def read_announcement(token: str, public: Ed25519PublicKey) -> Announcement:
    claims = _decode(token, public, purpose="announcement")
    try:
        return Announcement(
            str(claims["iss"]),
            str(claims["http"]),
            str(claims["flight"]),
            float(claims["at"]),
            token,
            _holds(claims.get("holds", {})),
            _revoked(claims),
            _revoked_nodes(claims),
            _rules(claims),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError("the announcement lacks its endpoints") from exc


def _revoked(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("revoked", [])
    if not isinstance(raw, list) or not all(
        isinstance(item, str) and len(item) <= 64 for item in raw
    ):
        raise TypeError("revoked must be a list of token ids")
    return frozenset(raw)


def _revoked_nodes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("revoked_nodes", [])
    if not isinstance(raw, list) or not all(is_valid_name(item) for item in raw):
        raise TypeError("revoked_nodes must be a list of node names")
    return frozenset(raw)


def _rules(claims: dict[str, Any]) -> dict[str, Any]:
    raw = claims.get("rules", {})
    if not isinstance(raw, dict):
        raise TypeError("rules must be an object")
    return raw


def _holds(raw: Any) -> dict[str, tuple[int, int, int]]:
    """The replicas an announcement lists, checked: names, and three counts each."""
    if not isinstance(raw, dict):
        raise TypeError("holds must be an object")
    held = {}
    for name, value in raw.items():
        owner, _, product = str(name).partition(".")
        if not (is_valid_name(owner) and is_valid_name(product)):
            raise ValueError(f"holds names an invalid product {name!r}")
        size, delta, version = value
        if not all(isinstance(n, int) and n >= 0 for n in (size, delta, version)):
            raise ValueError(f"holds gives bad counts for {name}")
        held[str(name)] = (size, delta, version)
    return held


# -- user tokens --------------------------------------------------------------------------
@dataclass(frozen=True)
class UserClaims:
    name: str
    role: str
    node: str  # the node the person belongs to ("" for none)
    attrs: dict[str, str]
    token_id: str
    expires: int


def issue_user_token(
    hub_key: NodeKey,
    hub: str,
    name: str,
    role: str,
    *,
    node: str = "",
    attrs: dict[str, str] | None = None,
    ttl_seconds: int,
) -> tuple[str, UserClaims]:
    """The hub vouches for a person or service: name, role, home node and attributes."""
    now = int(time.time())
    claims = UserClaims(
        name, role, node, dict(attrs or {}), secrets.token_hex(16), now + ttl_seconds
    )
    token = _encode(
        {
            "typ": "user",
            "iss": hub,
            "sub": name,
            "role": role,
            "node": node,
            "attrs": claims.attrs,
            "jti": claims.token_id,
            "iat": now,
            "exp": claims.expires,
        },
        hub_key,
    )
    return token, claims


def read_user_token(token: str, hub_public: Ed25519PublicKey) -> UserClaims:
    """Check a user token's signature (by the hub) and expiry; revocation is the caller's."""
    claims = _decode(token, hub_public, purpose="user")
    try:
        attrs = claims.get("attrs", {})
        if not isinstance(attrs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()
        ):
            raise TypeError("attrs must map names to strings")
        name, role, node = str(claims["sub"]), str(claims["role"]), str(claims.get("node", ""))
        if not is_valid_name(name) or not is_valid_name(role.replace("-", "_")):
            raise ValueError("bad user or role name")
        return UserClaims(name, role, node, attrs, str(claims["jti"]), int(claims["exp"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError(f"the user token is malformed: {exc}") from exc


# -- request tokens -----------------------------------------------------------------------
@dataclass(frozen=True)
class RequestClaims:
    caller: str
    key_id: str
    token_id: str = ""
    expires: int = 0


class SeenRequests:
    """Request tokens already accepted, until they expire: a token works once, so a
    recorded call (a fragment ticket with its signature, say) cannot be played again."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def check(self, claims: RequestClaims) -> None:
        if not claims.token_id:
            raise TokenError("the request token has no id; sign it again")
        now = self._clock()
        with self._lock:
            if claims.token_id in self._seen:
                raise TokenError("this signed request was already used; sign a new one")
            if len(self._seen) > 4096:
                cutoff = now - CLOCK_LEEWAY_SECONDS
                self._seen = {k: exp for k, exp in self._seen.items() if exp >= cutoff}
            self._seen[claims.token_id] = claims.expires


def sign_request(
    key: NodeKey, caller: str, audience: str, method: str, path: str, body: bytes = b""
) -> str:
    """A short-lived token for one call from `caller` to node `audience`."""
    now = int(time.time())
    return _encode(
        {
            "typ": "request",
            "iss": caller,
            "aud": audience,
            "mth": method.upper(),
            "pth": path,
            "bh": body_hash(body),
            "jti": secrets.token_hex(12),
            "iat": now,
            "exp": now + REQUEST_TOKEN_SECONDS,
        },
        key,
    )


def request_caller(token: str) -> str:
    """The caller a request token claims to be (unchecked; used to find its key)."""
    caller = _peek(token, "request token").get("iss")
    if not isinstance(caller, str) or not is_valid_name(caller):
        raise TokenError("the request token names no valid caller")
    return caller


def read_request_token(
    token: str,
    public_key: bytes,
    *,
    audience: str,
    method: str,
    path: str,
    body: bytes = b"",
) -> RequestClaims:
    """Check that `token` was signed by `public_key` for exactly this call."""
    claims = _decode(token, public_key_from_bytes(public_key), purpose="request", audience=audience)
    if claims.get("mth") != method.upper() or claims.get("pth") != path:
        raise TokenError("the request token was made for another call")
    if claims.get("bh") != body_hash(body):
        raise TokenError("the request body does not match its signature")
    if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("iat"), int):
        raise TokenError("the request token must say when it was made and when it ends")
    if claims["exp"] - claims["iat"] > REQUEST_TOKEN_SECONDS:
        raise TokenError("the request token is valid for too long")
    return RequestClaims(
        str(claims["iss"]), key_id_of(public_key), str(claims.get("jti", "")), int(claims["exp"])
    )
