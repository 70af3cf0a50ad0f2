"""Source-test fixtures: a real PostgreSQL server for the whole session."""

from __future__ import annotations

import pytest

from tests.pgserver import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
