"""Fragment tickets from coordinators: anything malformed is refused before any SQL runs."""

from __future__ import annotations

import json

import pytest

from shoal.errors import UsageError
from shoal.server.flight import MAX_INPUTS_PER_FRAGMENT, MAX_PRODUCTS_PER_FRAGMENT, _parse_ticket

INPUT = {
    "id": "__shoal_b0",
    "owner": "hq",
    "product": "catalogue",
    "sql": "SELECT 1",
    "version": 2,
    "holders": ["hq"],
    "columns": ["sku"],
}


def _ticket(**fragment) -> bytes:
    base = {"owner": "hq", "product": "orders", "sql": "SELECT 1"}
    return json.dumps({"fragment": {**base, **fragment}}).encode()


def test_sql_and_fragment_tickets_are_read():
    assert _parse_ticket(b"SELECT 1") == {"sql": "SELECT 1"}
    assert _parse_ticket(b'{"sql": "SELECT 2"}') == {"sql": "SELECT 2"}
    parsed = _parse_ticket(_ticket(version=3, also=[["prices", 1], ["stock", None]]))
    assert parsed["fragment"]["also"] == [["prices", 1], ["stock", None]]
    assert _parse_ticket(_ticket(inputs=[INPUT]))["fragment"]["inputs"] == [INPUT]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b"{not json",
        b'{"x": []}',
        b'{"fragment": 1}',
        _ticket(owner=None),
        _ticket(version=-1),
        _ticket(version="3"),
        _ticket(version=True),
        _ticket(also="prices"),
        _ticket(also=[["prices"]]),
        _ticket(also=[["prices", -2]]),
        _ticket(also=[[1, 2]]),
        _ticket(also=[{"product": "prices"}]),
        _ticket(also=[["p", 1]] * (MAX_PRODUCTS_PER_FRAGMENT + 1)),
        # inputs: fetched by the node itself, so their shape is checked as strictly
        _ticket(inputs=INPUT),
        _ticket(inputs=[{**INPUT, "inputs": [INPUT]}]),  # inputs do not nest
        _ticket(inputs=[{**INPUT, "id": "users; DROP"}]),
        _ticket(inputs=[{**INPUT, "id": "__shoal_f0"}]),
        _ticket(inputs=[{**INPUT, "holders": []}]),
        _ticket(inputs=[{**INPUT, "holders": "hq"}]),
        _ticket(inputs=[{**INPUT, "columns": [1]}]),
        _ticket(inputs=[{**INPUT, "version": -3}]),
        _ticket(inputs=[{k: v for k, v in INPUT.items() if k != "sql"}]),
        _ticket(inputs=[INPUT] * (MAX_INPUTS_PER_FRAGMENT + 1)),
    ],
)
def test_malformed_tickets_are_refused(raw):
    with pytest.raises(UsageError):
        _parse_ticket(raw)
