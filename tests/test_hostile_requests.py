"""Client input the gateway must not echo or choke on: JSON nested too deep (every
door), an endless `model` in X-Kong-LLM-Model, a client Authorization meant for us."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from helpers import route, target, url

from gateway.jsondepth import MAX_DEPTH, too_deep
from gateway.replies import MAX_MODEL_ECHO

CHAT = [{"role": "user", "content": "hi"}]
FRONT = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
TOO_DEEP = "request body is nested too deeply (limit 128)"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> str:
    """JSON text of `depth` containers, alternating lists and objects, around 1 (built
    as text: Python's json recurses, and orjson writes at most 254 levels)."""
    opens = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opens + "1" + closes


def body_with(deep: str, **fields: Any) -> bytes:
    """A request body (one level itself) with `deep` under "x"."""
    return (json.dumps(fields)[:-1] + ', "x": ' + deep + "}").encode()


def test_depth_is_counted_exactly_whatever_the_body_size() -> None:
    for depth in (1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 254, 255, 1000):
        # The body itself is one level; padded past the size where brackets are counted.
        for pad in ("", "x" * 10_000):
            raw = body_with(nested(depth - 1), messages=CHAT, pad=pad)
            parsed = orjson.loads(raw)
            assert too_deep(raw, parsed) == (depth > MAX_DEPTH), (depth, len(pad))


def test_many_brackets_but_shallow_is_fine() -> None:
    """A long conversation and brackets inside strings: many `{`, little depth."""
    body = {"messages": [{"role": "user", "content": "[{" * 100} for _ in range(300)]}
    raw = json.dumps(body).encode()
    assert not too_deep(raw, json.loads(raw))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1000])
async def test_too_deep_is_400_on_route_paths_and_both_front_doors(
    depth: int, upstream, gateway, http
) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")), frontends=FRONT)
    deep = nested(depth - 1)
    openai_shape, ollama_shape = {"error": {"message": TOO_DEEP}}, {"error": TOO_DEEP}
    for path, body, answer in (
        ("/chat", body_with(deep, messages=CHAT), openai_shape),
        ("/v1/chat/completions", body_with(deep, model="llama2", messages=CHAT), openai_shape),
        ("/api/chat", body_with(deep, model="llama2", messages=CHAT), ollama_shape),
    ):
        async with http.post(url(gw, path), data=body, headers=JSON) as r:
            assert r.status == 400, path
            assert r.headers["Content-Type"] == "application/json"
            assert await r.json() == answer, path
    assert up.generation_requests() == []
    # At the limit, fine.
    body = body_with(nested(MAX_DEPTH - 1), messages=CHAT)
    async with http.post(url(gw), data=body, headers=JSON) as r:
        assert r.status == 200


async def test_a_long_model_is_not_echoed_in_the_header(upstream, gateway, http) -> None:
    up = await upstream("ollama", models=("m" * MAX_MODEL_ECHO, "m" * 200_000))
    gw = await gateway(route(target(up, "/api/chat", name=None)))
    for model, echoed in (("m" * MAX_MODEL_ECHO, True), ("m" * 200_000, False)):
        async with http.post(url(gw), json={"model": model, "messages": CHAT}) as r:
            assert r.status == 200
            header = r.headers.get("X-Kong-LLM-Model")
            assert header == (f"llama2/{model}" if echoed else None)
    # The upstream still got the model as sent.
    assert [len(r.json["model"]) for r in up.generation_requests()] == [MAX_MODEL_ECHO, 200_000]


async def test_client_authorization_reaches_the_upstream_only_with_allow_override(
    upstream, gateway, http
) -> None:
    up = await upstream("ollama")
    own = {"header_name": "X-Api-Key", "header_value": "ours-0123456789", "allow_override": True}
    gw = await gateway(
        route(target(up, "/api/chat"), path="/none", name="none"),
        route(
            target(up, "/api/chat", auth={"header_name": "X-Api-Key", "header_value": "ours"}),
            path="/fixed",
            name="fixed",
        ),
        route(target(up, "/api/chat", auth=own), path="/override", name="override"),
    )
    headers = {"Authorization": "Bearer sk-client-dummy"}
    for path in ("/none", "/fixed", "/override"):
        async with http.post(url(gw, path), json={"messages": CHAT}, headers=headers) as r:
            assert r.status == 200
    got = [r.headers.get("Authorization") for r in up.generation_requests()]
    assert got == [None, None, "Bearer sk-client-dummy"]
