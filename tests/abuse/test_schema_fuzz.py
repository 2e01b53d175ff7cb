"""Property-based fuzzing of the whole API from its own /api/openapi.json (schemathesis, in
process against the Flask app): for every documented operation, requests that fit the document
and requests that break it are generated, sent with a real bearer token (so they get past 401),
and every answer must be no 500 and match what the document says: status codes, content types,
headers and body schemas; a request that breaks the document must be refused with a 4xx.

Repeatable and bounded: hypothesis derandomized, no example database, FUZZ_EXAMPLES examples
per operation and mode. (schemathesis's own pytest plugin reads a node attribute that pytest 9
no longer has when the schema comes from a fixture; its strategies are used directly instead.)"""
from __future__ import annotations

import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.auth import issue_token

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
# Operations where a request that fits the document may still be refused with a 400, for a rule
# that JSON Schema cannot state. Every other check (no 500, documented status, content type and
# body) still applies to them.
CROSS_FIELD_RULES = {
    "POST /files/upload/create": "chunkSize must lie between min(1 MiB, fileSize) and 16 MiB; the pool's size, "
                                 "type and encryption policy; fileName at most 255 bytes of UTF-8",
    "POST /push/subscriptions": "keys.p256dh must be a point on the P-256 curve",
    "POST /tasks": "parameters are validated by the schema of the task's type (components <type>Parameters)",
}


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.fixture(scope="module")
def fuzz_headers(app) -> dict:
    """One account's real token for every generated request."""
    return {"Authorization": f"Bearer {issue_token(uuid.uuid4(), app=app)}"}


def fuzz(operation, mode: GenerationMode, headers: dict) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        note(f"{operation.label} ({mode.value})")
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    excluded = [positive_data_acceptance] if operation.label in CROSS_FIELD_RULES else []
    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_every_operation_answers_as_documented(api_schema, fuzz_headers, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 30
    failures = []
    for operation in operations:
        try:
            fuzz(operation, mode, fuzz_headers)
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (AssertionError, BaseExceptionGroup) as error:  # schemathesis's failures: all reported below
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
