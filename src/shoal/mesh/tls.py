"""A node's TLS material and the contexts every connection between nodes is made with.

Traffic between nodes is mutual TLS checked against the mesh CA (see `authority`): each
side shows a certificate the hub signed, and each client checks that the server it reached
is the node it meant to reach. A node's certificate has one DNS name, its **server name**
(`berlin.node.shoal.invalid`; `.invalid` is reserved, so it never clashes with real DNS),
and clients ask for that name (TLS SNI) whatever address they dial: so no member can stand
in for another, and nodes can move between addresses without new certificates.

<home>/tls/ca.pem     the mesh CA certificate
<home>/tls/node.pem   this node's certificate chain and its private key, in one file (mode
                      0600) so a renewal replaces both in one rename
"""

from __future__ import annotations

import datetime
import hashlib
import re
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shoal.durable import atomic_write
from shoal.errors import NotFoundError, TokenError
from shoal.names import is_valid_name

__all__ = [
    "NodeTLS",
    "ca_fingerprint",
    "check_ca",
    "node_of_peer",
    "server_name",
    "user_context",
]

SERVER_NAME_SUFFIX = ".node.shoal.invalid"
MAX_CA_PEM = 16 * 1024
# Renew once a third of a certificate's life is left: a node that is down for a while (up to
# a third of the lifetime) still comes back with a valid certificate.
RENEW_WHEN_LEFT = 1 / 3
# Certificates are valid from a little before they are made, so a peer whose clock is a few
# minutes behind the hub's does not refuse them; that part does not count as their life.
CERT_BACKDATE = datetime.timedelta(minutes=10)


# One PEM block (certificate or key) with its line end; node.pem holds the chain, then the key.
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----\r?\n?", re.S)


def server_name(node: str) -> str:
    """The DNS name in node `node`'s certificate; `_` becomes `-` (node names have no `-`,
    so the mapping is one to one, and DNS names have no `_`)."""
    return node.replace("_", "-") + SERVER_NAME_SUFFIX


def node_of_server_name(name: str) -> str | None:
    if not name.endswith(SERVER_NAME_SUFFIX):
        return None
    node = name[: -len(SERVER_NAME_SUFFIX)].replace("-", "_")
    return node if is_valid_name(node) else None


def node_of_peer(peer: dict[str, Any] | None) -> str | None:
    """The node a verified peer certificate (as `SSLSocket.getpeercert()` gives it) names."""
    if not peer:
        return None
    for kind, value in peer.get("subjectAltName", ()):
        if kind == "DNS":
            node = node_of_server_name(str(value))
            if node is not None:
                return node
    return None


def ca_fingerprint(ca_pem: bytes) -> str:
    """SHA-256 of the CA certificate's DER bytes, hex: what a join token pins."""
    try:
        certificate = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise TokenError(f"the mesh CA certificate is not a PEM certificate: {exc}") from exc
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_ca(ca_pem: bytes, fingerprint: str) -> bytes:
    """`ca_pem` if it is the CA the fingerprint names; TokenError otherwise."""
    if len(ca_pem) > MAX_CA_PEM:
        raise TokenError("the mesh CA certificate is too long")
    if ca_fingerprint(ca_pem) != fingerprint:
        raise TokenError(
            "the hub's certificate authority is not the one the join token names",
            hint="is the URL the hub that made the token? someone may be in between",
        )
    return ca_pem


def user_context(ca_pem: bytes, expected_node: str | None) -> ssl.SSLContext:
    """For people and tools: trust only the mesh CA; check the server is `expected_node`
    (its server name is then sent as SNI), or, without one, any node of the mesh."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    if expected_node is None:
        context.check_hostname = False  # any certificate the mesh CA signed
    return context


class NodeTLS:
    """This node's CA certificate, key and certificate (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "tls"
        self.ca_path = self.folder / "ca.pem"
        self.node_path = self.folder / "node.pem"
        self._stamp: tuple[int, int] | None = None
        self._cert: x509.Certificate | None = None

    def ready(self) -> bool:
        return self.ca_path.exists() and self.node_path.exists()

    def require(self) -> None:
        if not self.ready():
            raise NotFoundError(
                f"no TLS certificate in {self.folder}",
                hint="a node gets one when it joins a mesh (`shoal join`); a hub when it "
                "first serves",
            )

    def install(self, certificate_pem: bytes, key_pem: bytes, ca_pem: bytes | None = None) -> None:
        """Keep a certificate the hub signed and its key (and the CA, when given)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        if ca_pem is not None:
            atomic_write(self.ca_path, ca_pem)
        atomic_write(self.node_path, certificate_pem + key_pem, mode=0o600)
        self._cert = None

    # -- what is held -------------------------------------------------------------------
    def ca_pem(self) -> bytes:
        self.require()
        return self.ca_path.read_bytes()

    def node_pem(self) -> bytes:
        self.require()
        return self.node_path.read_bytes()

    def certificate(self) -> x509.Certificate:
        stat = self.node_path.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if self._cert is None or self._stamp != stamp:
            self._cert = x509.load_pem_x509_certificate(self.node_pem())
            self._stamp = stamp
        return self._cert

    def certificate_and_key(self) -> tuple[bytes, bytes]:
        """The certificate and key PEM apart (Flight takes them so)."""
        certificates, key = b"", b""
        for block in _PEM_BLOCK.findall(self.node_pem()):
            if block.startswith(b"-----BEGIN CERTIFICATE-----"):
                certificates += block
            else:
                key += block
        return certificates, key

    def expires(self) -> datetime.datetime:
        return self.certificate().not_valid_after_utc

    def needs_renewal(self, now: datetime.datetime | None = None) -> bool:
        certificate = self.certificate()
        now = now or datetime.datetime.now(datetime.UTC)
        life = certificate.not_valid_after_utc - certificate.not_valid_before_utc - CERT_BACKDATE
        return certificate.not_valid_after_utc - now <= life * RENEW_WHEN_LEFT

    def node_name(self) -> str:
        names = self.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else ""

    # -- contexts -----------------------------------------------------------------------
    def server_context(self) -> ssl.SSLContext:
        """For this node's HTTP server: its certificate; a client certificate is asked for
        and, when shown, must be the mesh CA's (people and tools come with tokens instead)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.node_path)
        context.load_verify_locations(cadata=self.ca_pem().decode("ascii"))
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def reload(self, context: ssl.SSLContext) -> None:
        """Put a renewed certificate into a running server's context (new handshakes)."""
        context.load_cert_chain(self.node_path)

    def client_context(self) -> ssl.SSLContext:
        """For calls to other nodes: trust the mesh CA only, show this node's certificate,
        and check the server's name (send `server_name(peer)` as SNI)."""
        context = ssl.create_default_context(cadata=self.ca_pem().decode("ascii"))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.node_path)
        return context

    def flight_server_options(self) -> dict[str, Any]:
        """Arrow Flight server options: mutual TLS, clients must show a mesh certificate."""
        import pyarrow.flight as flight

        certificate, key = self.certificate_and_key()
        return {
            "tls_certificates": [flight.CertKeyPair(certificate, key)],
            "verify_client": True,
            "root_certificates": self.ca_pem(),
        }

    def flight_client_options(self, peer: str) -> dict[str, Any]:
        """Arrow Flight client options for a call to node `peer`."""
        certificate, key = self.certificate_and_key()
        return {
            "tls_root_certs": self.ca_pem(),
            "cert_chain": certificate,
            "private_key": key,
            "override_hostname": server_name(peer),
        }
