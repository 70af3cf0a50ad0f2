"""Source-test fixtures: a real PostgreSQL server for the whole session."""

from __future__ import annotations

import pytest

from tests.pgserver import PostgresServer, ServerUnavailableError


@pytest.fixture(scope="session")
def postgres():
    """A running server; missing binaries fail the tests (never skip them silently)."""
    try:
        server = PostgresServer()
    except ServerUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
    except ServerUnavailableError as exc:
        server.stop()
        pytest.fail(f"the test PostgreSQL server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
