"""Key-auth's `key_in_body` (the key as a top-level field of the JSON body, on route
paths and both front doors: the openai SDK's `extra_body`, a raw Ollama request), and
hide_credentials keeping back every place a key is read from, not only the one that
matched, while an operator's overridable auth header still reaches the upstream."""

from __future__ import annotations

import json

import openai
import pytest
from helpers import LONG_WINDOW, route, target, url
from log_kit import capture_access_log

from gateway.config import ConfigError, parse

ALICE = "alice-key-0123456789"
BOB_KEY = "bob-key-SECRET-2222"
CONSUMERS = [{"username": "alice", "keyauth_credentials": [{"key": ALICE}]}]
BOB = {"username": "bob", "keyauth_credentials": [{"key": BOB_KEY}]}
MESSAGES = [{"role": "user", "content": "hi"}]
DOORS = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}


async def _gw(gateway, upstream, **key_auth):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["key_auth"] = {"key_in_body": True, **key_auth}
    return await gateway(r, consumers=CONSUMERS, frontends=DOORS), up


async def test_a_key_in_the_body_passes_and_is_taken_out(gateway, upstream, http):
    gw, up = await _gw(gateway, upstream)
    body = {"messages": MESSAGES, "apikey": ALICE, "temperature": 0.5}
    async with http.post(url(gw), json=body) as resp:
        assert resp.status == 200, await resp.text()
    (seen,) = up.generation_requests()
    assert "apikey" not in seen.json and ALICE not in repr(seen)
    assert seen.json["options"]["temperature"] == 0.5  # the rest of the body is intact


async def test_hide_credentials_false_sends_the_field_on(gateway, upstream, http):
    up = await upstream("openai")
    r = route(target(up, "/v1/chat/completions", fmt="openai"))
    r["key_auth"] = {"key_in_body": True, "hide_credentials": False}
    gw = await gateway(r, consumers=CONSUMERS)
    async with http.post(url(gw), json={"messages": MESSAGES, "apikey": ALICE}) as resp:
        assert resp.status == 200
    (seen,) = up.generation_requests()
    assert seen.json["apikey"] == ALICE  # an openai target passes unknown fields on


@pytest.mark.parametrize(
    ("field", "status", "message"),
    [
        (None, 401, "No API key found in request"),
        ("", 401, "No API key found in request"),
        (12345, 401, "No API key found in request"),
        ("nope", 401, "Unauthorized"),
        ([ALICE, ALICE], 401, "Duplicate API key found"),
    ],
)
async def test_bad_keys_in_the_body(gateway, upstream, http, field, status, message):
    gw, up = await _gw(gateway, upstream)
    body = {"messages": MESSAGES} if field is None else {"messages": MESSAGES, "apikey": field}
    async with http.post(url(gw), json=body) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["message"] == message
    assert up.generation_requests() == []


async def test_a_header_key_comes_first_and_every_copy_is_kept_back(gateway, upstream, http):
    up = await upstream("openai")  # an openai target would pass an unknown field on
    r = route(target(up, "/v1/chat/completions", fmt="openai"))
    r["key_auth"] = {"key_in_body": True, "key_names": ["apikey", "x-api-key"]}
    r["config"]["targets"][0]["logging"] = {"log_statistics": True, "log_payloads": True}
    gw = await gateway(r, consumers=[*CONSUMERS, BOB])
    buf = capture_access_log()
    body = {"messages": MESSAGES, "apikey": BOB_KEY}
    headers = {"apikey": ALICE, "X-Api-Key": BOB_KEY}
    async with http.post(url(gw) + f"?apikey={ALICE}&keep=1", json=body, headers=headers) as r:
        assert r.status == 200
    (seen,) = up.generation_requests()
    assert "apikey" not in seen.json and "apikey" not in seen.query
    assert seen.query.get("keep") == "1"
    assert "x-api-key" not in {k.lower() for k in seen.headers}
    assert ALICE not in repr(seen) and BOB_KEY not in repr(seen)
    (line,) = buf.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["consumer"] == "alice"  # the header, first in order, decided
    assert BOB_KEY not in line and "[redacted]" in entry["ai"]["proxy"]["payload"]["request"]


async def test_a_hidden_bearer_key_leaves_room_for_the_operators_header(gateway, upstream, http):
    """With allow_override, a client's own Authorization replaces the target's; a
    Bearer that was the client's gateway key is kept back, and then the operator's
    header must go instead, not nothing. A token for another service still overrides."""
    up = await upstream("ollama")
    auth = {"header_name": "Authorization", "header_value": "Bearer UPSTREAM-777"}
    t = target(up, "/api/chat", auth={**auth, "allow_override": True})
    r = route(t)
    r["key_auth"] = {}
    gw = await gateway(r, consumers=CONSUMERS)
    cases = [
        {"Authorization": f"Bearer {ALICE}"},
        {"apikey": ALICE},
        {"apikey": ALICE, "Authorization": f"Bearer {ALICE}"},
        {"apikey": ALICE, "Authorization": "Bearer for-the-upstream"},
    ]
    for headers in cases:
        async with http.post(url(gw), json={"messages": MESSAGES}, headers=headers) as resp:
            assert resp.status == 200
    sent = [r.headers.get("Authorization") for r in up.generation_requests()]
    assert sent == [
        "Bearer UPSTREAM-777",
        "Bearer UPSTREAM-777",
        "Bearer UPSTREAM-777",
        "Bearer for-the-upstream",
    ]


async def test_the_openai_sdk_with_extra_body(gateway, upstream):
    gw, up = await _gw(gateway, upstream)
    base = f"http://127.0.0.1:{gw.port}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0) as client:
        out = await client.chat.completions.create(
            model="llama2", messages=MESSAGES, extra_body={"apikey": ALICE}
        )
        assert out.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(
                model="llama2", messages=MESSAGES, extra_body={"apikey": "wrong"}
            )
    assert all("apikey" not in r.json for r in up.generation_requests())


async def test_the_ollama_front_door_reads_the_clients_own_body(gateway, upstream, http):
    gw, up = await _gw(gateway, upstream)
    body = {"model": "llama2", "messages": MESSAGES, "stream": False, "apikey": ALICE}
    async with http.post(url(gw, "/api/chat"), json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["done"] is True
    warm = {"model": "llama2", "apikey": ALICE}  # a load request: no messages
    async with http.post(url(gw, "/api/chat"), json=warm) as resp:
        assert resp.status == 200
    async with http.post(url(gw, "/api/chat"), json={**warm, "apikey": "nope"}) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": "Unauthorized"}
    assert len(up.generation_requests()) == 1 and ALICE not in repr(up.generation_requests())


async def test_rate_limits_count_the_body_keys_consumer(gateway, upstream, http):
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"), path="/chat", name="chat")
    r["key_auth"] = {"key_in_body": True}
    r["rate_limiting"] = {"limits": [{"requests": 1, "window": LONG_WINDOW}]}
    gw = await gateway(r, consumers=CONSUMERS)
    body = {"messages": MESSAGES, "apikey": ALICE}
    statuses = []
    for _ in range(2):
        async with http.post(url(gw), json=body) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 429]
    text = gw.metrics.exposition().decode()
    assert 'consumer="alice",limit="requests"} 1.0' in text and ALICE not in text


def test_key_in_body_must_be_a_boolean():
    raw = {
        "consumers": CONSUMERS,
        "routes": [
            {
                **route(target("http://127.0.0.1:1/api/chat", "")),
                "key_auth": {"key_in_body": "yes"},
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse(json.loads(json.dumps(raw)), {})
    assert any("key_auth.key_in_body" in e for e in info.value.errors)
