"""`response_format` through the gateway to a real native llama-server (`raw_flavor:
llamacpp`, `/completion`): the gateway sends the schema as `json_schema`, the server
turns it into a grammar, and the answer parses as JSON that matches the schema, even
from the random-weight test model (the schemas are tight enough that the grammar
alone decides)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from helpers import route, target, url
from realkit import chat_text, chunks, completion_text, post, post_sse

pytestmark = pytest.mark.real_upstream

SCHEMAS = {
    "boolean": {"type": "boolean"},
    "enum": {"type": "string", "enum": ["yes", "no", "maybe"]},
    "object": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    },
}
MESSAGES = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "Is the sky blue?"},
]


def raw_target(server: Any, route_type: str = "llm/v1/chat") -> dict[str, Any]:
    options = {"raw_flavor": "llamacpp"}
    return target(server.url("/completion"), "", fmt="raw", route_type=route_type, options=options)


def request(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    # Whitespace the grammar allows between tokens is the only freedom left: 64 tokens
    # cover it (the answers here take 3 to 20).
    return {"max_tokens": 64, "temperature": 0, "response_format": response_format, **extra}


@pytest.mark.parametrize("name", list(SCHEMAS))
async def test_json_schema_answer_matches_schema(llama_server, tap, gateway, http, name) -> None:
    schema = SCHEMAS[name]
    t = await tap(llama_server)
    gw = await gateway(route(raw_target(t)))
    status, got, _ = await post(http, url(gw), {"messages": MESSAGES, **request(schema)})
    assert status == 200, got
    assert json.loads(t.generations()[-1].request)["json_schema"] == schema
    choice = got["choices"][0]
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    assert choice["finish_reason"] == "stop"  # the grammar was complete: the model stopped


async def test_json_schema_completions_stream(llama_server, tap, gateway, http) -> None:
    schema = SCHEMAS["enum"]
    t = await tap(llama_server)
    gw = await gateway(route(raw_target(t, "llm/v1/completions")))
    body = {"prompt": "Is the sky blue? Answer:", "stream": True, **request(schema)}
    r, payloads = await post_sse(http, url(gw), body)
    assert r.status == 200
    jsonschema.validate(json.loads(completion_text(chunks(payloads))), schema)


async def test_json_object_answer_is_an_object(llama_server, tap, gateway, http) -> None:
    t = await tap(llama_server)
    gw = await gateway(route(raw_target(t)))
    body = {"messages": MESSAGES, "max_tokens": 64, "response_format": {"type": "json_object"}}
    r, payloads = await post_sse(http, url(gw), {**body, "stream": True, "temperature": 0})
    assert r.status == 200
    assert json.loads(t.generations()[-1].request)["json_schema"] == {"type": "object"}
    assert isinstance(json.loads(chat_text(chunks(payloads))), dict)
