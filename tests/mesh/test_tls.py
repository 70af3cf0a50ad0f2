"""The mesh CA and node TLS material, in process: what the hub signs, what a node keeps and
refuses, names, fingerprints and when a certificate is due for renewal."""

from __future__ import annotations

import datetime
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shoal.crypto import generate_key
from shoal.errors import NotFoundError, TokenError, UsageError
from shoal.mesh.authority import (
    Authority,
    check_issued,
    new_private_key,
    private_key_pem,
    public_key_pem,
)
from shoal.mesh.tls import (
    CERT_BACKDATE,
    NodeTLS,
    ca_fingerprint,
    check_ca,
    node_of_peer,
    node_of_server_name,
    server_name,
)
from shoal.mesh.tokens import issue_join_token, peek_join_token


@pytest.fixture
def authority(tmp_path) -> Authority:
    return Authority.create(tmp_path / "hub" / "tls", "hq")


def _node(tmp_path, authority: Authority, name: str = "berlin", hours: float = 720) -> NodeTLS:
    key = new_private_key()
    tls = NodeTLS(tmp_path / name)
    tls.install(
        authority.issue(name, public_key_pem(key), hours), private_key_pem(key), authority.pem
    )
    return tls


def test_ca_key_is_private_and_loads_back(tmp_path, authority):
    key_path, cert_path = Authority.paths(tmp_path / "hub" / "tls")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = Authority.load(tmp_path / "hub" / "tls")
    assert loaded.pem == authority.pem == cert_path.read_bytes()
    assert loaded.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_node_certificate_names_the_node_and_chains_to_the_ca(tmp_path, authority):
    tls = _node(tmp_path, authority, "main_store")
    certificate = tls.certificate()
    certificate.verify_directly_issued_by(authority.certificate)
    assert tls.node_name() == "main_store"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["main-store.node.shoal.invalid"]
    assert stat.S_IMODE(tls.node_path.stat().st_mode) == 0o600
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def test_server_names_map_one_to_one():
    for name in ("berlin", "main_store", "a1_b2_c3"):
        assert node_of_server_name(server_name(name)) == name
    assert node_of_server_name("berlin.example.com") is None
    assert node_of_server_name("Bad-Name.node.shoal.invalid") is None
    assert node_of_peer({"subjectAltName": (("DNS", server_name("hq")),)}) == "hq"
    assert node_of_peer({"subjectAltName": (("DNS", "evil.com"),)}) is None
    assert node_of_peer(None) is None and node_of_peer({}) is None


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"not a key",
        b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
        b"x" * 5000,
        "ed25519",
        "p384",
    ],
)
def test_the_authority_signs_only_p256_public_keys(authority, key):
    if key == "ed25519":
        key = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif key == "p384":
        key = public_key_pem(ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        authority.issue("berlin", key, 24)


def test_the_authority_refuses_bad_node_names(authority):
    with pytest.raises(UsageError):
        authority.issue("Berlin; DROP", public_key_pem(new_private_key()), 24)


def test_a_node_keeps_only_a_certificate_for_its_key_name_and_ca(tmp_path, authority):
    key = new_private_key()
    good = authority.issue("berlin", public_key_pem(key), 24)
    check_issued(good, authority.pem, "berlin", key)
    with pytest.raises(TokenError, match="another key"):
        check_issued(good, authority.pem, "berlin", new_private_key())
    with pytest.raises(TokenError, match="another node"):
        check_issued(
            authority.issue("munich", public_key_pem(key), 24), authority.pem, "berlin", key
        )
    other = Authority.create(tmp_path / "other", "elsewhere")
    with pytest.raises(TokenError, match="does not verify"):
        check_issued(other.issue("berlin", public_key_pem(key), 24), authority.pem, "berlin", key)
    with pytest.raises(TokenError, match="does not verify"):
        check_issued(b"not a certificate", authority.pem, "berlin", key)


def test_the_ca_must_match_the_fingerprint_the_token_pins(tmp_path, authority):
    pin = ca_fingerprint(authority.pem)
    assert check_ca(authority.pem, pin) == authority.pem
    other = Authority.create(tmp_path / "other", "mallory")
    with pytest.raises(TokenError, match="not the one the join token names"):
        check_ca(other.pem, pin)
    with pytest.raises(TokenError):
        check_ca(b"garbage", pin)
    with pytest.raises(TokenError, match="too long"):
        check_ca(b"x" * 20_000, pin)


def test_join_tokens_carry_the_ca_pin_and_refuse_a_malformed_one(authority):
    key = generate_key()
    pin = ca_fingerprint(authority.pem)
    token, _ = issue_join_token(key, "hq", "berlin", "eu-de", 600, pin)
    assert peek_join_token(token).ca == pin
    bad, _ = issue_join_token(key, "hq", "berlin", "eu-de", 600, "zz" * 32)
    with pytest.raises(TokenError, match="fingerprint"):
        peek_join_token(bad)


def test_renewal_is_due_when_a_third_of_the_life_is_left(tmp_path, authority):
    tls = _node(tmp_path, authority, hours=30)
    made = tls.certificate().not_valid_before_utc + CERT_BACKDATE
    life = tls.expires() - made
    assert life == datetime.timedelta(hours=30)
    assert not tls.needs_renewal(made + life * 0.6)
    assert tls.needs_renewal(made + life * 0.7)
    assert tls.needs_renewal(tls.expires() + datetime.timedelta(days=1))


def test_contexts_and_flight_options_hold_the_node_certificate(tmp_path, authority):
    tls = _node(tmp_path, authority)
    assert tls.server_context().verify_mode.name == "CERT_OPTIONAL"
    assert tls.client_context().check_hostname
    certificate, key = tls.certificate_and_key()
    assert certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")
    options = tls.flight_client_options("hq")
    assert options["override_hostname"] == "hq.node.shoal.invalid"
    assert tls.flight_server_options()["verify_client"] is True


def test_a_home_without_tls_says_how_to_get_it(tmp_path):
    with pytest.raises(NotFoundError, match="no TLS certificate") as caught:
        NodeTLS(tmp_path / "nothing").ca_pem()
    assert "shoal join" in (caught.value.hint or "")
