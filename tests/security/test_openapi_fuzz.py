"""The HTTP API fuzzed against its own OpenAPI spec with schemathesis: whatever it is sent,
a node in a mesh, with a product, answers no 5xx and only what the spec says it answers.

In process, through the ASGI app (the servers are tested in-process first); bounded, so
the whole file runs in about ten seconds.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shoal.mesh.users import Users
from shoal.node import Node
from shoal.server.http import create_app
from shoal.server.metrics import Metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES = 30

OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/node"),
    ("GET", "/api/v1/nodes"),
    ("POST", "/api/v1/mesh/join"),
    ("GET", "/api/v1/mesh/ca"),
    ("POST", "/api/v1/mesh/certificate"),
    ("GET", "/api/v1/mesh/catalog"),
    ("POST", "/api/v1/mesh/gossip"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/{name}"),
    ("POST", "/api/v1/products/{name}/versions"),
    ("GET", "/api/v1/replication/{owner}/{product}/log"),
    ("GET", "/api/v1/replication/{owner}/{product}/file"),
    ("POST", "/api/v1/query"),
    ("POST", "/api/v1/explain"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The spec of a hub with one product, loaded from its app."""
    root = tmp_path_factory.mktemp("fuzz")
    node = Node.init(root / "hq", "hq", "eu-de")
    node.membership.found()
    data = root / "orders.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5]}), data)
    node.publish("orders", str(data))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(node, Metrics(node)))
    # Fuzzed as an admin, so requests get past the door and reach every handler.
    token = Users(node.home, node.membership).add("fuzzer", "admin", {}, "", 3600)
    return schema, {"authorization": f"Bearer {token}"}


def test_every_operation_is_fuzzed(api):
    spec = api[0].raw_schema["paths"]
    found = {(method.upper(), path) for path, item in spec.items() for method in item}
    assert found == set(OPERATIONS)


# Operations with something the spec constrains (a body, a typed or bounded parameter):
# only these can be sent data the spec rules out.
CONSTRAINED = {
    ("POST", "/api/v1/mesh/join"),
    ("GET", "/api/v1/mesh/catalog"),
    ("GET", "/api/v1/products"),
    ("POST", "/api/v1/products/{name}/versions"),
    ("GET", "/api/v1/replication/{owner}/{product}/log"),
    ("GET", "/api/v1/replication/{owner}/{product}/file"),
    ("POST", "/api/v1/query"),
    ("POST", "/api/v1/explain"),
}
CASES = [(*operation, GenerationMode.POSITIVE) for operation in OPERATIONS] + [
    (*operation, GenerationMode.NEGATIVE) for operation in OPERATIONS if operation in CONSTRAINED
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_answers_no_5xx_and_matches_the_spec(api, method, path, mode):
    schema, admin = api
    operation = schema[path][method]
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        case.call_and_validate(checks=checks, headers=admin)

    fuzz()
