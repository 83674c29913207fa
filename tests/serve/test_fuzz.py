"""Fuzz the v2 HTTP API from its own OpenAPI description (schemathesis), in-process.

Every operation FastAPI describes (the infer routes with the request schema ``INFER_OPENAPI`` adds)
gets seeded, bounded examples, valid and not: the server never answers 5xx, every error body is
``{"error": "<one line>"}``, and documented responses match their schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from serve_models import RECORDER_TEXT, TWO_INPUTS_TEXT, save_model
from test_http import repository_resolver, running

from hone.serve.http import create_app
from hone.serve.registry import ModelRegistry

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def fuzz_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-repository")
    save_model(TWO_INPUTS_TEXT, root / "pair" / "1" / "model.onnx")
    save_model(RECORDER_TEXT, root / "recorder" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def fuzz_client(fuzz_repository: Path) -> Iterator[TestClient]:
    with running(repository_resolver(fuzz_repository), max_body_bytes=MAX_BODY_BYTES) as (client, _):
        yield client


def assert_error_body_is_one_line(status_code: int, text: str) -> None:
    if status_code < 400:
        return
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert "\n" not in body["error"], body


def test_openapi_describes_the_infer_request_body() -> None:
    document = create_app(ModelRegistry(list)).openapi()
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    tensor = infer["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]["items"]
    assert set(tensor["properties"]) == {"name", "shape", "datatype", "data", "parameters"}
    assert "FP32" in tensor["properties"]["datatype"]["enum"]
    assert {"/v2", "/v2/health/ready", "/v2/models/{name}/versions/{version}/infer"} <= set(document["paths"])


def test_fuzzed_requests_never_get_a_server_error_and_errors_are_one_json_line(
    fuzz_client: TestClient,
) -> None:
    schema = schemathesis.openapi.from_dict(fuzz_client.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    infer = [op for op in operations if op.path == "/v2/models/{name}/infer"]
    # every operation with valid data; the infer route also with data that breaks its schema (shapes
    # of 65+ dims, dims beyond int64, wrong types): what used to reach numpy and give 500s
    cases = [(op, GenerationMode.POSITIVE) for op in operations] + [(op, GenerationMode.NEGATIVE) for op in infer]
    for operation, mode in cases:
        if operation.path.endswith("/unload"):
            continue  # unloading would take the fuzzed models away; test_http covers it

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12 if mode is GenerationMode.POSITIVE else 40, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            if operation.path == "/v2/models/{name}/infer":
                case.path_parameters = {"name": "pair"}  # reach decoding, not only the 404
            response = fuzz_client.request(**case.as_transport_kwargs(base_url="http://testserver"))
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
            )
            assert_error_body_is_one_line(response.status_code, response.text)

        check()
