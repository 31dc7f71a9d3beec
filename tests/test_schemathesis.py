"""schemathesis against the OpenAPI document the gateway serves (`GET /openapi.json` on
the status listener), sent to the proxy listener.

Every operation of the document (routes, model listings, both front doors) gets
generated requests, valid and invalid by the document's schemas. Checks: no 5xx, the
status, Content-Type, headers and body of every answer as documented (errors included).
Derandomized and bounded; `LLAMA_GATEWAY_FUZZ_EXAMPLES` raises the bound.

Each operation runs as its own hypothesis test inside one pytest test: schemathesis'
pytest integration (`from_fixture`) needs a pytest internal that pytest 9 dropped, and
the operations are only known once the gateway serves its document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from fuzz_kit import DERANDOMIZE, EXAMPLES, LiveGateway
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PER_OPERATION = max(EXAMPLES // 10, 10)  # per operation and generation mode


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gw = LiveGateway().start()
    yield gw
    gw.stop()


def _body_schema(doc: dict[str, Any], op: Any) -> dict[str, Any]:
    spec = doc["paths"][op.path][op.method]
    schema: dict[str, Any] = (
        spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        or {}
    )
    return schema


def _models(doc: dict[str, Any], op: Any) -> list[str]:
    """The operation's `model` values when it lists them (`allOf: [request, enum]`)."""
    schema = _body_schema(doc, op)
    return list(schema["allOf"][1]["properties"]["model"]["enum"]) if "allOf" in schema else []


def _signature(doc: dict[str, Any], op: Any) -> str:
    """Operations that take the same request (but for the models they list) and
    document the same answers — the route paths of one route type, an OpenAI door
    endpoint — share generated cases: building a strategy for the chat schema costs
    seconds of CPU."""
    spec = doc["paths"][op.path][op.method]
    schema = _body_schema(doc, op)
    schema = schema["allOf"][0] if "allOf" in schema else schema
    return json.dumps([op.method, schema, spec.get("parameters"), spec["responses"]])


def _run(
    operation: Any,
    twins: list[tuple[Any, list[str]]],
    models: list[str],
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
) -> None:
    @settings(
        max_examples=PER_OPERATION,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=10)
        for twin, twin_models in twins:
            body = case.body
            if isinstance(body, dict) and twin_models and body.get("model") in models:
                # a model this operation serves → one the twin serves
                pick = twin_models[models.index(body["model"]) % len(twin_models)]
                body = {**body, "model": pick}
            same = twin.Case(
                path_parameters=case.path_parameters,
                headers=case.headers,
                query=case.query,
                body=body,
                media_type=case.media_type,
            )
            same.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=10)

    run()


def test_schemathesis(live: LiveGateway) -> None:
    url = f"http://127.0.0.1:{live.status_port}/openapi.json"
    document = requests.get(url, timeout=10).json()
    schema = schemathesis.openapi.from_url(url)
    base_url = f"http://127.0.0.1:{live.port}"
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = sum(len(methods) for methods in document["paths"].values())
    assert len(operations) == documented > 10
    groups: dict[str, list[Any]] = {}
    for op in operations:
        groups.setdefault(_signature(document, op), []).append(op)
    failures: list[str] = []
    with requests.Session() as session:
        for op, *twins in groups.values():
            # Negative cases need something to make invalid: a body (a path parameter
            # of type string has no invalid value).
            has_body = "requestBody" in document["paths"][op.path][op.method]
            modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * has_body
            for mode in modes:
                try:
                    pairs = [(t, _models(document, t)) for t in twins]
                    _run(op, pairs, _models(document, op), mode, base_url, session)
                except (Exception, BaseExceptionGroup) as exc:  # all operations run, then
                    labels = ", ".join(o.label for o in [op, *twins])
                    failures.append(f"{labels} ({mode.value}): {exc}")  # failures are listed
    assert not failures, json.dumps(failures, indent=1)
