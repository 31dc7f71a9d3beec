"""X-Request-Id: the client's (when sane) or a fresh one, sent upstream, returned on
every answer of the proxy listener, in the access log."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from helpers import route, target, url
from log_kit import capture_access_log

from gateway import requestid
from gateway.outbound import RequestTemplate
from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]
FRESH = re.compile(r"[0-9a-f]{32}")
FRONT = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}


def sent_ids(up) -> list[list[str]]:
    """The X-Request-Id fields of each generation request the upstream received."""
    return [r.headers.getall("X-Request-Id", []) for r in up.generation_requests()]


async def test_a_fresh_id_when_the_client_sends_none(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    t = target(up, "/api/chat", logging={"log_statistics": True})
    gw = await gateway(route(t))
    buf = capture_access_log()
    ids = []
    for _ in range(2):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
            ids.append(r.headers["X-Request-Id"])
    assert all(FRESH.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert sent_ids(up) == [[ids[0]], [ids[1]]]
    logged = [json.loads(line)["request_id"] for line in buf.getvalue().splitlines()]
    assert logged == ids


@pytest.mark.parametrize(
    "sent",
    [
        "abc",
        "0af7651916cd43dd8448eb211c80319c",  # W3C trace id
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # ULID
        "a.b_c:d@e/f+g=h-i",
        "x" * 128,
    ],
)
async def test_a_sane_client_id_is_kept_and_forwarded_once(upstream, gateway, http, sent) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat", logging={"log_statistics": True})))
    buf = capture_access_log()
    headers = {"X-Request-Id": sent}
    async with http.post(url(gw), json={"messages": CHAT}, headers=headers) as r:
        assert r.status == 200 and r.headers.getall("X-Request-Id") == [sent]
    assert sent_ids(up) == [[sent]]
    assert json.loads(buf.getvalue())["request_id"] == sent


@pytest.mark.parametrize(
    "sent",
    ["x" * 129, "has space", "<script>alert(1)</script>", "a\tb", "", "caf\u00e9", "a;b", "'1'"],
)
async def test_a_hostile_client_id_is_replaced(upstream, gateway, http, sent) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    async with http.post(url(gw), json={"messages": CHAT}, headers={"X-Request-Id": sent}) as r:
        assert r.status == 200
        rid = r.headers["X-Request-Id"]
    assert FRESH.fullmatch(rid), "replaced by a fresh id, not echoed"
    assert sent_ids(up) == [[rid]], "the client's value does not reach the upstream"


async def test_raw_bytes_and_repeated_ids_never_reach_the_upstream(upstream, gateway) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    body = json.dumps({"messages": CHAT}).encode()
    head = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: \xff\xfe-id\r\nX-Request-Id: second\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(head + body)
    answer = await reader.read()
    writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert b" 200 " in status
    (rid,) = re.findall(rb"(?im)^x-request-id: (.*?)\r$", rest)
    assert FRESH.fullmatch(rid.decode()) and b"\xff" not in rest
    assert sent_ids(up) == [[rid.decode()]]


async def test_on_streams_and_every_kind_of_error(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    failing = await upstream("ollama", behaviour=Behaviour(status=500))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    gw = await gateway(
        route(target(up, "/api/chat")),
        route(target(failing, "/api/chat"), path="/failing", name="failing"),
        route(target(f"http://127.0.0.1:{dead}/api/chat", ""), path="/dead", name="dead"),
    )
    cases = [
        ("/chat", {"messages": CHAT, "stream": True}, 200),  # SSE stream
        ("/failing", {"messages": CHAT}, 500),  # an upstream's error passed through
        ("/dead", {"messages": CHAT}, 502),  # upstream unavailable
        ("/chat", {"nothing": 1}, 400),  # refused by the gateway
        ("/nowhere", {"messages": CHAT}, 404),  # no route
    ]
    for i, (path, body, status) in enumerate(cases):
        sent = f"case-{i}"
        async with http.post(url(gw, path), json=body, headers={"X-Request-Id": sent}) as r:
            data = await r.read()
            assert r.status == status, (path, data)
            assert r.headers.getall("X-Request-Id") == [sent], path
            if path == "/chat" and status == 200:
                assert data.rstrip().endswith(b"data: [DONE]")
    assert sent_ids(up) == [["case-0"]]
    assert sent_ids(failing) == [["case-1"]]
    # Without one of the client's: a fresh one on errors too.
    async with http.get(url(gw, "/nowhere")) as r:
        assert r.status == 404 and FRESH.fullmatch(r.headers["X-Request-Id"])


async def test_front_doors_carry_it(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"), frontends=FRONT)
    h = {"X-Request-Id": "door"}
    chat = {"model": "llama2", "messages": CHAT}
    async with http.post(url(gw, "/v1/chat/completions"), json=chat, headers=h) as r:
        assert r.status == 200 and r.headers["X-Request-Id"] == "door"
    async with http.post(url(gw, "/api/chat"), json=chat, headers=h) as r:  # NDJSON stream
        lines = (await r.read()).splitlines()
        assert r.status == 200 and r.headers["X-Request-Id"] == "door"
        assert json.loads(lines[-1])["done"] is True
    assert sent_ids(up) == [["door"], ["door"]]
    refused = [
        ("POST", "/v1/chat/completions", {"model": "nope", "messages": CHAT}, 404),
        ("GET", "/v1/chat/completions", None, 405),
        ("POST", "/api/chat", {"model": "nope", "messages": CHAT}, 404),
        ("GET", "/v1/models", None, 200),
        ("GET", "/api/tags", None, 200),
    ]
    for method, path, body, status in refused:
        async with http.request(method, url(gw, path), json=body, headers=h) as r:
            assert r.status == status and r.headers["X-Request-Id"] == "door", path


def test_the_template_replaces_the_clients_field_with_ours() -> None:
    from multidict import MultiDict
    from yarl import URL

    from gateway.config.schema import AuthConfig
    from gateway.http1 import Origin

    t = RequestTemplate(
        URL("http://127.0.0.1:8080/api/chat"), Origin("http", "127.0.0.1", 8080), AuthConfig()
    )
    data = t.build(
        [(b"X-Request-Id", b"evil id"), (b"x-request-id", b"two"), (b"X-Other", b"1")],
        MultiDict(),
        b"{}",
        request_id=requestid.field("good"),
    )
    head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert [h for h in head if h.lower().startswith(b"x-request-id")] == [b"X-Request-Id: good"]
    assert b"X-Other: 1" in head


def test_sane_rule() -> None:
    assert requestid.sane("a" * requestid.MAX_LENGTH)
    assert not requestid.sane("a" * (requestid.MAX_LENGTH + 1))
    assert not requestid.sane("a\n") and not requestid.sane("")
    assert FRESH.fullmatch(requestid.new_id())
