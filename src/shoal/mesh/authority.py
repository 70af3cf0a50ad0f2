"""The mesh certificate authority: the hub's X.509 CA that vouches for every node's TLS key.

The hub makes it when it founds the mesh and signs a certificate for each node that joins
(and again before that certificate expires). It is apart from the Ed25519 keys that sign
logs and tokens: TLS needs keys every TLS stack takes, so the CA and the node TLS keys are
ECDSA P-256 with SHA-256 signatures, accepted by Python's ssl (uvicorn, httpx), Arrow
Flight's gRPC, browsers and BI tools alike (tests/mesh/test_tls.py checks the first two).

<home>/tls/ca.key   the CA's private key (on the hub only, mode 0600)
<home>/tls/ca.pem   the CA certificate (on every node; join tokens pin its fingerprint)
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.config import Home
from shoal.durable import atomic_write
from shoal.errors import NotFoundError, TokenError, UsageError
from shoal.mesh.tls import CERT_BACKDATE, NodeTLS, server_name
from shoal.names import is_valid_name

__all__ = [
    "CA_YEARS",
    "Authority",
    "certify_self",
    "check_issued",
    "found_authority",
    "new_private_key",
    "private_key_pem",
    "public_key_pem",
    "tls_dir",
]

CA_YEARS = 10
MAX_PUBLIC_KEY_PEM = 4096


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """The hub's CA: its key and certificate, and the node certificates it signs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def paths(tls_dir: Path) -> tuple[Path, Path]:
        return tls_dir / "ca.key", tls_dir / "ca.pem"

    @classmethod
    def exists(cls, tls_dir: Path) -> bool:
        return cls.paths(tls_dir)[0].exists()

    @classmethod
    def create(cls, tls_dir: Path, mesh: str) -> Authority:
        """Make a new CA for the mesh whose hub is `mesh` and store it in `tls_dir`."""
        key = new_private_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shoal mesh"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Shoal mesh CA of {mesh}"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        tls_dir.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = cls.paths(tls_dir)
        atomic_write(key_path, private_key_pem(key), mode=0o600)
        atomic_write(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate)

    @classmethod
    def load(cls, tls_dir: Path) -> Authority:
        key_path, cert_path = cls.paths(tls_dir)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise NotFoundError(
                "this node holds no mesh certificate authority; only the hub signs certificates"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"{key_path} is not an ECDSA key")
        return cls(key, certificate)

    def issue(self, node: str, public_key_pem: bytes, hours: float) -> bytes:
        """A certificate (PEM) for node `node`'s TLS key, valid for `hours`: its subject
        names the node and its one DNS name is the node's server name (see `tls`)."""
        if not is_valid_name(node):
            raise UsageError(f"invalid node name {node!r}")
        if len(public_key_pem) > MAX_PUBLIC_KEY_PEM:
            raise UsageError("the TLS public key is too long")
        try:
            public = serialization.load_pem_public_key(public_key_pem)
        except ValueError as exc:
            raise UsageError(f"the TLS public key is not a PEM public key: {exc}") from exc
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise UsageError("the TLS public key must be ECDSA P-256")
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + datetime.timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name(node))]), False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)


def tls_dir(home: Home) -> Path:
    return home.root / "tls"


def found_authority(home: Home) -> Authority:
    """On the hub: the mesh CA, made (with the hub's own certificate) if there is none."""
    folder = tls_dir(home)
    if Authority.exists(folder):
        return Authority.load(folder)
    authority = Authority.create(folder, home.settings.name)
    certify_self(home, authority)
    return authority


def certify_self(home: Home, authority: Authority | None = None) -> None:
    """On the hub: a fresh key and certificate for its own TLS, signed by its own CA."""
    authority = authority or Authority.load(tls_dir(home))
    key = new_private_key()
    certificate = authority.issue(
        home.settings.name, public_key_pem(key), home.settings.tls_cert_hours
    )
    NodeTLS(home.root).install(certificate, private_key_pem(key), authority.pem)


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_issued(
    certificate_pem: bytes, ca_pem: bytes, node: str, key: ec.EllipticCurvePrivateKey
) -> None:
    """Refuse a certificate from the hub that is not for this node's key, or not the CA's."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise TokenError(f"the hub's TLS certificate for this node does not verify: {exc}") from exc
    if public_key_pem(key) != certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise TokenError("the hub's TLS certificate is for another key")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != node:
        raise TokenError("the hub's TLS certificate names another node")
