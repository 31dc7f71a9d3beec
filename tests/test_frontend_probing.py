"""Model probing behind key-auth, over real sockets: on every front-door endpoint that
resolves a model, a client that no key-auth route lets in gets the same 401 for a model
that does not exist as for one behind key-auth, so it cannot tell which names are
served there. A consumer (a key some route accepts) still gets 404 for an unknown
model and 403 for a route it may not use; a gateway without key-auth keeps its 404s."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from helpers import route, target, url
from multidict import CIMultiDict

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
CONSUMERS = [
    {"username": "alice", "keyauth_credentials": [{"key": ALICE}]},
    {"username": "bob", "keyauth_credentials": [{"key": BOB}], "allowed_routes": ["open"]},
]
DOORS = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
HI = [{"role": "user", "content": "hi"}]
COMPLETIONS, EMBEDDINGS = "llm/v1/completions", "llm/v1/embeddings"


def _body(endpoint: str, model: str) -> dict[str, Any] | None:
    """The request each endpoint takes for `model` (None: a GET)."""
    return {
        "/v1/chat/completions": {"model": model, "messages": HI},
        "/v1/completions": {"model": model, "prompt": "hi"},
        "/v1/embeddings": {"model": model, "input": "hi"},
        "/v1/models/": None,
        "/api/chat": {"model": model, "messages": HI, "stream": False},
        "/api/generate": {"model": model, "prompt": "hi", "stream": False},
        "/api/embed": {"model": model, "input": "hi"},
        "/api/embeddings": {"model": model, "prompt": "hi"},
        "/api/show": {"model": model},
    }[endpoint]


# Each endpoint and the protected model it resolves (`secret-chat` is chat-only: the
# Ollama door's generate turns into a chat for it).
PROTECTED = {
    "/v1/chat/completions": "secret-chat",
    "/v1/completions": "secret-gen",
    "/v1/embeddings": "secret-embed",
    "/v1/models/": "secret-chat",
    "/api/chat": "secret-chat",
    "/api/generate": "secret-chat",
    "/api/embed": "secret-embed",
    "/api/embeddings": "secret-embed",
    "/api/show": "secret-gen",
}
ENDPOINTS = list(PROTECTED)
STRANGERS: dict[str, Any] = {
    "no key": {},
    "wrong key": {"apikey": "nope-0123456789"},
    "wrong bearer": {"Authorization": "Bearer nope-0123456789"},
    "duplicate key": CIMultiDict([("apikey", ALICE), ("apikey", ALICE)]),
}
MESSAGES = {
    "no key": "No API key found in request",
    "duplicate key": "Duplicate API key found",
}


async def _call(
    http: aiohttp.ClientSession, gw: Any, endpoint: str, model: str, headers: Any
) -> tuple[int, Any, set[str], aiohttp.ClientResponse]:
    body = _body(endpoint, model)
    if body is None:
        resp = await http.get(url(gw, endpoint + model), headers=headers)
    else:
        resp = await http.post(url(gw, endpoint), json=body, headers=headers)
    async with resp:
        data = await resp.json()
    # What a client could compare besides the body: which headers came (values such
    # as Date and X-Request-Id differ on every answer anyway).
    return resp.status, data, set(resp.headers), resp


async def _gateway(gateway: Any, upstream: Any, protect: bool = True) -> Any:
    ollama = await upstream("ollama", models=("open-model", "secret-chat", "secret-gen"))
    emb = await upstream("ollama", models=("secret-embed",))
    routes = [
        route(target(ollama, "/api/chat", name="open-model"), path="/open", name="open"),
        route(target(ollama, "/api/chat", name="secret-chat"), path="/sc", name="secret-chat"),
        route(
            target(ollama, "/api/generate", route_type=COMPLETIONS, name="secret-gen"),
            path="/sg",
            name="secret-gen",
        ),
        route(
            target(emb, "/api/embed", route_type=EMBEDDINGS, name="secret-embed"),
            path="/se",
            name="secret-embed",
        ),
    ]
    if protect:
        for r in routes[1:]:
            r["key_auth"] = {}
    return await gateway(*routes, consumers=CONSUMERS, frontends=DOORS)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("who", list(STRANGERS))
async def test_a_stranger_cannot_tell_a_protected_model_from_none(
    gateway, upstream, http, endpoint: str, who: str
) -> None:
    gw = await _gateway(gateway, upstream)
    headers = STRANGERS[who]
    protected = await _call(http, gw, endpoint, PROTECTED[endpoint], headers)
    unknown = await _call(http, gw, endpoint, "no-such-model", headers)
    assert protected[0] == 401, protected[1]
    assert protected[:3] == unknown[:3]
    message = MESSAGES.get(who, "Unauthorized")
    error = unknown[1]["error"]
    assert (error if endpoint.startswith("/api/") else error["message"]) == message
    assert unknown[3].headers["WWW-Authenticate"].startswith("Key ")
    assert unknown[3].headers["Content-Type"].startswith("application/json")
    assert "secret" not in repr(unknown[1])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_consumer_still_gets_404_and_403(gateway, upstream, http, endpoint) -> None:
    gw = await _gateway(gateway, upstream)
    alice = {"Authorization": f"Bearer {ALICE}"}
    status, data, _, _ = await _call(http, gw, endpoint, "no-such-model", alice)
    assert status == 404, data
    assert "secret" in repr(data)  # the "not found" list shows what alice may use
    status, data, _, _ = await _call(http, gw, endpoint, PROTECTED[endpoint], alice)
    assert status == 200, data
    # bob's key is good, but only for the open route: a consumer, told what is not there
    # and what he may not use (as before).
    bob = {"apikey": BOB}
    status, data, _, _ = await _call(http, gw, endpoint, "no-such-model", bob)
    assert status == 404, data
    assert "secret" not in repr(data)
    status, data, _, _ = await _call(http, gw, endpoint, PROTECTED[endpoint], bob)
    if endpoint == "/v1/models/":
        assert status == 404  # a listing hides what bob's key does not open
    else:
        assert status == 403, data
        msg = data["error"] if endpoint.startswith("/api/") else data["error"]["message"]
        assert msg == "You cannot consume this service"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_without_key_auth_an_unknown_model_is_404_as_before(
    gateway, upstream, http, endpoint
) -> None:
    gw = await _gateway(gateway, upstream, protect=False)
    status, data, headers, _ = await _call(http, gw, endpoint, "no-such-model", {})
    assert status == 404 and "WWW-Authenticate" not in headers
    if endpoint.startswith("/api/"):
        assert data["error"].startswith("model 'no-such-model' not found; available: ")
    else:
        assert data["error"]["code"] == "model_not_found"


async def test_open_models_stay_visible_to_strangers(gateway, upstream, http) -> None:
    """What a stranger may use is no secret: an open model asked for at the wrong
    endpoint keeps its 404 / Ollama's "does not support", not a 401."""
    gw = await _gateway(gateway, upstream)
    async with http.post(url(gw, "/api/embed"), json={"model": "open-model", "input": "x"}) as r:
        assert r.status == 400
        assert await r.json() == {"error": '"open-model" does not support embeddings'}
    body = {"model": "open-model", "input": "x"}
    async with http.post(url(gw, "/v1/embeddings"), json=body) as r:
        assert r.status == 404
        assert "secret" not in await r.text()
    async with http.get(url(gw, "/v1/models/open-model")) as r:
        assert r.status == 200
    body = {"model": "open-model", "messages": HI, "stream": False}
    async with http.post(url(gw, "/api/chat"), json=body) as r:
        assert r.status == 200


async def test_a_key_in_the_body_makes_a_consumer(gateway, upstream, http) -> None:
    """key_in_body: the door passes the client's body to the key check, so a good key
    there is a consumer (404), a bad one a stranger (401)."""
    up = await upstream("ollama", models=("secret-chat",))
    r = route(target(up, "/api/chat", name="secret-chat"), path="/sc", name="secret-chat")
    r["key_auth"] = {"key_in_body": True}
    gw = await gateway(r, consumers=CONSUMERS[:1], frontends=DOORS)
    for path in ("/v1/chat/completions", "/api/chat", "/api/show"):
        body = {"model": "no-such-model", "messages": HI, "stream": False}
        async with http.post(url(gw, path), json={**body, "apikey": ALICE}) as resp:
            assert resp.status == 404, (path, await resp.text())
        async with http.post(url(gw, path), json={**body, "apikey": "nope-0123456"}) as resp:
            assert resp.status == 401, path
        async with http.post(url(gw, path), json=body) as resp:
            assert resp.status == 401, path


async def test_the_answer_is_counted_as_an_unknown_model(gateway, upstream, http) -> None:
    gw = await _gateway(gateway, upstream)
    async with http.post(url(gw, "/api/chat"), json=_body("/api/chat", "no-such-model")) as r:
        assert r.status == 401
    text = gw.metrics.exposition().decode()
    assert 'frontend_rejected_total{frontend="ollama",reason="unknown_model"} 1.0' in text


async def test_a_key_one_route_accepts_makes_a_consumer(gateway, upstream, http) -> None:
    """Routes may look for the key under other names: a key that any key-auth route
    accepts is a consumer's, though the others found no key (their 401)."""
    up = await upstream("ollama", models=("a-model", "b-model"))
    a = route(target(up, "/api/chat", name="a-model"), path="/a", name="a")
    b = route(target(up, "/api/chat", name="b-model"), path="/b", name="b")
    a["key_auth"], b["key_auth"] = {"key_names": ["apikey"]}, {"key_names": ["x-key"]}
    gw = await gateway(a, b, consumers=CONSUMERS[:1], frontends=DOORS)
    body = {"model": "no-such-model", "messages": HI, "stream": False}
    for path in ("/v1/chat/completions", "/api/chat"):
        async with http.post(url(gw, path), json=body, headers={"x-key": ALICE}) as resp:
            assert resp.status == 404, path
            assert "b-model" in await resp.text() and "a-model" not in await resp.text()
        async with http.post(url(gw, path), json=body, headers={"x-key": "nope-0123"}) as r:
            assert r.status == 401, path
