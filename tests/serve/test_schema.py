"""Property-based fuzz of the server's own OpenAPI schema (schemathesis over hypothesis), a bounded number of cases.

Schema-valid and schema-invalid requests to every operation, against the real server: no 5xx, every status and
body as documented, and every request the schema says is invalid is refused (the server is never more lenient than
the schema says: negative_data_rejection). It found that an undecodable body answers 400,
which the schema now documents."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import AUTH

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
CASES = 60


@pytest.fixture(scope="module")
def schema(tiny_server):
    loaded = schemathesis.openapi.from_url(f"{tiny_server.url}/openapi.json", headers=AUTH)
    loaded.config.base_url = tiny_server.url
    return loaded


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_documented_answers(schema, tiny_server, mode):
    strategy = schema.as_strategy(generation_mode=mode)
    seen = {"calls": 0}

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        case = data.draw(strategy)
        case.call_and_validate(base_url=tiny_server.url, headers=AUTH, checks=CHECKS, timeout=30)
        seen["calls"] += 1

    run()
    assert seen["calls"] >= CASES // 2
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200  # still serving
