"""Fuzzing POST /classify from the service's own OpenAPI document (`/docs.json`) with schemathesis.

Valid requests (positive mode) and schema-violating ones (negative mode) are generated from the
document and sent to a real `bentoml serve`. Every response must: not be a 5xx; have a status the
document lists; match the documented schema for that status; reject invalid input with a 4xx (413
included); and, for every 4xx, carry a JSON body {"error": "<message>"}. The examples are derandomized (the same
ones every run); `make test-long` runs more of them.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

# schemathesis' own negative_data_rejection does not count 413 as a rejection; ours is checked below.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def classify(server):
    return schemathesis.openapi.from_url(f"{server}/docs.json")["/classify"]["POST"]


def check_error_body(response) -> None:
    if 400 <= response.status_code < 500:
        headers = {name.lower(): value for name, value in response.headers.items()}
        content_type = headers.get("content-type", "")
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/json"), response.headers
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


def documented_refusal(status: int, text: str) -> bool:
    """Refusals of schema-valid requests that the document describes in words, not in the schema:
    whitespace-only texts and texts of dropped characters (the texts description) and an attention payload
    over the limit (413)."""
    error = json.loads(text).get("error", "")
    if status == 400 and ("unknown target label" in error or "it needs an 'attribution'" in error):
        return True  # `target`: one of the model's labels, and only with an attribution (its description)
    refused_text = "is empty or whitespace-only" in error or "has no tokens" in error
    return (status == 400 and refused_text) or (status == 413 and error.startswith("attention"))


def test_the_request_schema_says_what_the_service_enforces(classify):
    request_body = classify.definition.raw["requestBody"]
    assert request_body.get("required") is True
    assert request_body["content"]["application/json"]["schema"].get("additionalProperties") is False


@pytest.mark.parametrize(
    "examples",
    [pytest.param(60, id="short"), pytest.param(600, id="long", marks=pytest.mark.long)],
)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_classify_survives_fuzzing(classify, mode, examples):
    statuses: dict[int, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=classify.as_strategy(generation_mode=mode))
    def fuzz(case):
        response = case.call(timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)
        check_error_body(response)
        if mode is GenerationMode.NEGATIVE:  # a request that breaks the schema is refused, with a 4xx
            assert 400 <= response.status_code < 500, (case.body, response.status_code, response.text[:300])
        elif response.status_code != 200:  # a valid request is refused only for a documented reason
            assert documented_refusal(response.status_code, response.text), (case.body, response.text[:300])

    fuzz()
    print(mode.value, statuses)
    assert statuses, "no request was sent"
    if mode is GenerationMode.POSITIVE:
        assert statuses.get(200, 0) > 0, statuses
