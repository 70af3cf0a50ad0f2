"""Join tokens, certificates, announcements and request tokens: each forged, tampered,
expired or misused form is refused with a TokenError."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.crypto import generate_key
from shoal.errors import TokenError
from shoal.mesh.tokens import (
    issue_join_token,
    peek_join_token,
    read_announcement,
    read_certificate,
    read_join_token,
    read_request_token,
    request_caller,
    sign_announcement,
    sign_certificate,
    sign_request,
)

HUB = generate_key()
OTHER = generate_key()


def test_join_token_round_trip():
    token, claims = issue_join_token(HUB, "hq", "berlin", "eu-de", 3600)
    read = read_join_token(token, HUB.public)
    assert read == claims
    assert peek_join_token(token) == claims
    assert read.hub_key_id == HUB.key_id


def test_join_token_forged_by_another_key():
    token, _ = issue_join_token(OTHER, "hq", "berlin", "eu-de", 3600)
    with pytest.raises(TokenError, match="forged"):
        read_join_token(token, HUB.public)


def test_join_token_expired():
    token, _ = issue_join_token(HUB, "hq", "berlin", "eu-de", -120)
    with pytest.raises(TokenError, match="expired"):
        read_join_token(token, HUB.public)


def test_join_token_with_changed_claims_is_refused():
    token, _ = issue_join_token(HUB, "hq", "berlin", "eu-de", 3600)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "munich"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(TokenError):
        read_join_token(f"{header}.{forged_payload}.{signature}", HUB.public)


def test_alg_none_and_hmac_tokens_are_refused():
    unsigned = jwt.encode({"typ": "join-token", "sub": "x"}, key=None, algorithm="none")
    with pytest.raises(TokenError):
        read_join_token(unsigned, HUB.public)
    hmac = jwt.encode({"typ": "join-token", "sub": "x"}, key="s" * 32, algorithm="HS256")
    with pytest.raises(TokenError):
        read_join_token(hmac, HUB.public)


def test_a_certificate_is_not_a_join_token():
    certificate = sign_certificate(HUB, "hq", "berlin", "eu-de", OTHER.public_bytes)
    with pytest.raises(TokenError, match="not a join token"):
        read_join_token(certificate.token, HUB.public)
    read = read_certificate(certificate.token, HUB.public)
    assert (read.name, read.region, read.public_key, read.is_hub) == (
        "berlin",
        "eu-de",
        OTHER.public_bytes,
        False,
    )


@pytest.mark.parametrize("junk", ["", "x", "a.b.c", "." * 3, "é" * 10, "x" * 10_000])
def test_junk_tokens(junk):
    with pytest.raises(TokenError):
        read_join_token(junk, HUB.public)
    with pytest.raises(TokenError):
        peek_join_token(junk)


def test_announcement_must_be_signed_by_the_node():
    announcement = sign_announcement(OTHER, "berlin", "http://b:7400", "grpc://b:7401")
    assert read_announcement(announcement.token, OTHER.public).http == "http://b:7400"
    with pytest.raises(TokenError):
        read_announcement(announcement.token, HUB.public)


def test_request_token_binds_the_call():
    body = b'{"entries": []}'
    token = sign_request(OTHER, "berlin", "hq", "POST", "/api/v1/mesh/gossip", body)
    assert request_caller(token) == "berlin"
    claims = read_request_token(
        token,
        OTHER.public_bytes,
        audience="hq",
        method="POST",
        path="/api/v1/mesh/gossip",
        body=body,
    )
    assert claims.caller == "berlin"
    wrong = {
        "audience": dict(audience="munich"),
        "method": dict(method="GET"),
        "path": dict(path="/api/v1/query"),
        "body": dict(body=b"{}"),
    }
    for change in wrong.values():
        call = dict(audience="hq", method="POST", path="/api/v1/mesh/gossip", body=body) | change
        with pytest.raises(TokenError):
            read_request_token(token, OTHER.public_bytes, **call)
    with pytest.raises(TokenError):
        read_request_token(
            token,
            HUB.public_bytes,
            audience="hq",
            method="POST",
            path="/api/v1/mesh/gossip",
            body=body,
        )


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_in_a_token_is_refused(position, bit):
    token, _ = issue_join_token(HUB, "hq", "berlin", "eu-de", 3600)
    raw = bytearray(token.encode())
    index = position % len(raw)
    raw[index] ^= 1 << bit
    try:
        flipped = raw.decode()
    except UnicodeDecodeError:
        return
    if flipped == token:
        return
    try:
        claims = read_join_token(flipped, HUB.public)
    except TokenError:
        return
    # base64url has a few spare bits at the end of a segment: a flip there decodes to the
    # same bytes, so the claims must be exactly the original ones.
    assert claims == read_join_token(token, HUB.public)
