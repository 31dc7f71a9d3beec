"""Key-auth over real sockets: consumers, keys in a header, the query or `Bearer`, 401
and 403 in Kong's words, hide_credentials, the openai SDK with `api_key=`, metrics."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from helpers import route, target, url

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
CONSUMERS = [
    {"username": "alice", "keyauth_credentials": [{"key": ALICE}]},
    {"username": "bob", "keyauth_credentials": [{"key": BOB}], "allowed_routes": ["other"]},
]


async def _gw(gateway, upstream, key_auth=None, **extra):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["key_auth"] = key_auth if key_auth is not None else {"key_names": ["apikey"]}
    r.update(extra)
    other = route(target(up, "/api/chat"), path="/other", name="other")
    other["key_auth"] = {}
    gw = await gateway(r, other, consumers=CONSUMERS)
    return gw, up


async def test_missing_and_invalid_keys_are_401_in_kongs_words(gateway, upstream, http):
    gw, up = await _gw(gateway, upstream)
    async with http.post(url(gw), json=CHAT) as resp:
        assert resp.status == 401
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["WWW-Authenticate"].startswith("Key ")
        assert (await resp.json()) == {"error": {"message": "No API key found in request"}}
    async with http.post(url(gw), json=CHAT, headers={"apikey": "nope"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "Unauthorized"
    async with http.post(url(gw) + "?apikey=a&apikey=b", json=CHAT) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "Duplicate API key found"
    assert up.generation_requests() == []  # nothing reached the upstream


@pytest.mark.parametrize("where", ["header", "query", "bearer"])
async def test_a_good_key_passes_and_is_hidden_from_the_upstream(gateway, upstream, http, where):
    gw, up = await _gw(gateway, upstream)
    headers, suffix = {}, ""
    if where == "header":
        headers["apikey"] = ALICE
    elif where == "query":
        suffix = f"?apikey={ALICE}&keep=1"
    else:
        headers["Authorization"] = f"Bearer {ALICE}"
    async with http.post(url(gw) + suffix, json=CHAT, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    (seen,) = up.generation_requests()
    assert "apikey" not in {k.lower() for k in seen.headers}
    assert "authorization" not in {k.lower() for k in seen.headers}
    assert "apikey" not in seen.query
    if where == "query":
        assert seen.query.get("keep") == "1"  # only the key is taken out
    assert ALICE not in repr(seen)


async def test_hide_credentials_false_forwards_the_key_header(gateway, upstream, http):
    gw, up = await _gw(gateway, upstream, {"key_names": ["x-api-key"], "hide_credentials": False})
    async with http.post(url(gw), json=CHAT, headers={"X-Api-Key": ALICE}) as resp:
        assert resp.status == 200
    (seen,) = up.generation_requests()
    assert seen.headers.get("X-Api-Key") == ALICE


async def test_allowed_routes_refuse_other_routes_with_403(gateway, upstream, http):
    gw, _ = await _gw(gateway, upstream)
    async with http.post(url(gw), json=CHAT, headers={"apikey": BOB}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["message"] == "You cannot consume this service"
    async with http.post(url(gw, "/other"), json=CHAT, headers={"apikey": BOB}) as resp:
        assert resp.status == 200


async def test_key_in_query_off_ignores_the_query(gateway, upstream, http):
    gw, _ = await _gw(gateway, upstream, {"key_in_query": False})
    async with http.post(url(gw) + f"?apikey={ALICE}", json=CHAT) as resp:
        assert resp.status == 401


async def test_openai_sdk_api_key_is_the_bearer_key(gateway, upstream):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/v1/chat/completions", name="chat")
    r["key_auth"] = {}
    gw = await gateway(r, consumers=CONSUMERS[:1])
    base = f"http://127.0.0.1:{gw.port}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key=ALICE, max_retries=0) as client:
        out = await client.chat.completions.create(model="llama2", messages=CHAT["messages"])
        assert out.choices[0].message.content
    async with openai.AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as err:
            await client.chat.completions.create(model="llama2", messages=CHAT["messages"])
        assert "Unauthorized" in str(err.value)


async def test_consumer_metrics_and_refusals_are_counted(gateway, upstream, http):
    gw, _ = await _gw(gateway, upstream)
    async with http.post(url(gw), json=CHAT, headers={"apikey": ALICE}) as resp:
        assert resp.status == 200
    async with http.post(url(gw), json=CHAT) as resp:
        assert resp.status == 401
    text = gw.metrics.exposition().decode()
    assert (
        'llama_gateway_consumer_requests_total{route="chat",consumer="alice",outcome="success"} 1.0'
        in text
    )
    assert 'llama_gateway_auth_rejected_total{route="chat",reason="missing"} 1.0' in text
    assert ALICE not in text


async def test_front_door_requests_are_checked_against_the_routes_key_auth(gateway, upstream):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["key_auth"] = {}
    gw = await gateway(r, consumers=CONSUMERS[:1], frontends={"openai": {"prefix": "/v1"}})
    async with aiohttp.ClientSession() as http:
        body = {"model": "llama2", **CHAT}
        async with http.post(url(gw, "/v1/chat/completions"), json=body) as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {ALICE}"}
        async with http.post(url(gw, "/v1/chat/completions"), json=body, headers=headers) as resp:
            assert resp.status == 200


async def test_a_reload_swaps_consumers_for_new_requests(gateway, upstream, http):
    from gateway.config import parse

    gw, _ = await _gw(gateway, upstream)
    async with http.post(url(gw), json=CHAT, headers={"apikey": ALICE}) as resp:
        assert resp.status == 200
    raw = {
        "server": {"port": 0, "status_port": 0},
        "routes": [
            route(target(gw.config.routes[0].targets[0].options.upstream_url.url, ""),
                  path="/chat", name="chat") | {"key_auth": {}},
        ],
        "consumers": [{"username": "carol", "keyauth_credentials": [{"key": "carol-key-1234"}]}],
    }  # fmt: skip
    await gw.reload(parse(raw, {}))
    async with http.post(url(gw), json=CHAT, headers={"apikey": ALICE}) as resp:
        assert resp.status == 401  # alice is gone
    async with http.post(url(gw), json=CHAT, headers={"apikey": "carol-key-1234"}) as resp:
        assert resp.status == 200


async def test_the_ollama_client_sends_its_key_as_bearer(gateway, upstream):
    import ollama

    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat") | {"key_auth": {}}
    gw = await gateway(r, consumers=CONSUMERS[:1], frontends={"ollama": {"prefix": ""}})
    host = f"http://127.0.0.1:{gw.port}"
    good = ollama.AsyncClient(host=host, headers={"Authorization": f"Bearer {ALICE}"})
    out = await good.chat(model="llama2", messages=CHAT["messages"])
    assert out.message.content
    bad = ollama.AsyncClient(host=host)
    with pytest.raises(ollama.ResponseError) as err:
        await bad.chat(model="llama2", messages=CHAT["messages"])
    assert err.value.status_code == 401
    assert err.value.error == "No API key found in request"  # Ollama's {"error": "..."}


async def _two_routes(gateway, upstream, protect_open: bool = False):
    """`open-model` on an open route, `secret-model` behind key-auth; both doors on."""
    up = await upstream("ollama")
    open_r = route(target(up, "/api/chat", name="open-model"), path="/v1/open/chat/completions",
                   name="open")  # fmt: skip
    secret = route(target(up, "/api/chat", name="secret-model"), path="/secret", name="secret")
    secret["key_auth"] = {}
    if protect_open:
        open_r["key_auth"] = {}
    doors = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
    return await gateway(open_r, secret, consumers=CONSUMERS[:1], frontends=doors)


async def test_listings_show_protected_models_only_to_a_good_key(gateway, upstream, http):
    gw = await _two_routes(gateway, upstream)
    key = {"Authorization": f"Bearer {ALICE}"}
    async with http.get(url(gw, "/v1/models")) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["open-model"]
    async with http.get(url(gw, "/v1/models"), headers=key) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["open-model", "secret-model"]
    async with http.get(url(gw, "/api/tags")) as resp:
        assert [m["name"] for m in (await resp.json())["models"]] == ["open-model"]
    async with http.get(url(gw, "/api/tags"), headers=key) as resp:
        assert len((await resp.json())["models"]) == 2
    async with http.get(url(gw, "/v1/models/secret-model")) as resp:
        assert resp.status == 401  # as for a model that is not there (test_frontend_probing)
    async with http.get(url(gw, "/v1/models/secret-model"), headers=key) as resp:
        assert resp.status == 200
    async with http.post(url(gw, "/api/show"), json={"model": "secret-model"}) as resp:
        assert resp.status == 401
        assert (await resp.json()) == {"error": "No API key found in request"}
    # A stranger asking for a model that is not there gets the same 401; a consumer's
    # "not found" answer does not list what its key does not open.
    body = {"model": "nope", "messages": CHAT["messages"]}
    async with http.post(url(gw, "/v1/chat/completions"), json=body) as resp:
        assert resp.status == 401
        assert "secret-model" not in await resp.text()
    async with http.post(url(gw, "/api/chat"), json=body) as resp:
        assert resp.status == 401
        assert "secret-model" not in await resp.text()
    # Ollama's warm-up (empty messages) answers without an upstream: still key-checked.
    warm = {"model": "secret-model", "messages": []}
    async with http.post(url(gw, "/api/chat"), json=warm) as resp:
        assert resp.status == 401


async def test_all_protected_listings_refuse_instead_of_listing_nothing(gateway, upstream, http):
    gw = await _two_routes(gateway, upstream, protect_open=True)
    async with http.get(url(gw, "/v1/models"), headers={"apikey": "wrong"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "Unauthorized"
    async with http.get(url(gw, "/v1/open/models")) as resp:  # a route path's sibling list
        assert resp.status == 401
    async with http.get(url(gw, "/v1/open/models"), headers={"apikey": ALICE}) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["open-model"]
    base = f"http://127.0.0.1:{gw.port}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    async with openai.AsyncOpenAI(base_url=base, api_key=ALICE, max_retries=0) as client:
        assert {m.id async for m in client.models.list()} == {"open-model", "secret-model"}


async def test_the_access_log_names_the_consumer(gateway, upstream, http, caplog):
    import json
    import logging

    from gateway.accesslog import ACCESS_LOGGER

    up = await upstream("ollama")
    t = target(up, "/api/chat", logging={"log_statistics": True})
    gw = await gateway(
        route(t, path="/chat", name="chat") | {"key_auth": {}}, consumers=CONSUMERS[:1]
    )
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    async with http.post(url(gw), json=CHAT, headers={"apikey": ALICE}) as resp:
        assert resp.status == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert json.loads(line)["consumer"] == "alice"
    assert ALICE not in line
