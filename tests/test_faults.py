"""Fault injection: the gateway, over real sockets, against an upstream that misbehaves
in one way per mode (tests/faults.py).

Whatever the upstream does, the client gets a well-formed answer within a bound: a
JSON error with the status the taxonomy gives (502 unusable answer, 500 unreadable
200, the upstream's own status for an error page), or, once a stream has started, an
error event. And the secrets configured on the target (header, query and body auth)
and the client's own key never appear in anything the client receives, in the access
log (both payloads) or in the process log, even from an upstream that echoes the
request it got.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from faults import (
    MODES,
    FaultyUpstream,
    Mode,
    bad_header_value,
    deep_openai_answer,
    deep_stream_first,
    deep_stream_later,
    stream_error_echo,
)
from helpers import route, target, url
from log_kit import capture_access_log, json_log
from yarl import URL

from gateway.server import GatewayServer

# Every exchange ends well within this; a hang fails the test instead of the suite.
BOUND = 20.0
CHAT = [{"role": "user", "content": "what is 2+2?"}]
# Each secret has CORE in it, which no encoding changes: no form of any of them can
# show without it.
CORE = "Zq7S3CR3T"
HEADER_SECRET = f"hdr-{CORE}-0123"
QUERY_SECRET = f"qry {CORE}/+&=0123"  # characters that change when URL-encoded
BODY_SECRET = f'body-{CORE}-"quoted"\\-0123'  # and when JSON-escaped
CLIENT_KEY = f"sk-client-{CORE}-0123"
LOGGED = {"log_statistics": True, "log_payloads": True}

UNAVAILABLE = "upstream unavailable: {target}"
UNREADABLE = (
    "transformation failed from type llama2://llm/v1/chat: failed to decode ollama response"
)
BAD_HEAD = (
    "ctl_content_type_nul",
    "ctl_content_type_soh",
    "ctl_retry_after_vt",
    "ctl_retry_after_del",
    "non_ascii_content_type",
    "header_without_colon",
    "invalid_status_line",
    "endless_headers",
    "huge_header_block",
    "bad_chunk_size",
    "short_body_then_close",
)
# mode → (non-stream answer, stream answer): a status and its message, or "stream" +
# the last event of a stream that started (None: it ended well, with [DONE]).
EXPECTED: dict[str, tuple[tuple[int, str | None], tuple[int, str | None]]] = {
    **{m: ((502, UNAVAILABLE), (502, UNAVAILABLE)) for m in BAD_HEAD},
    "slow_drip": ((200, None), (200, None)),
    "truncated_json": ((500, UNREADABLE), (502, UNAVAILABLE)),
    "gzip_body": ((500, UNREADABLE), (502, UNAVAILABLE)),
    "stream_stops_mid_event": ((500, UNREADABLE), (200, "failed to decode ollama stream line")),
    "reset_mid_stream": ((502, UNAVAILABLE), (200, "upstream connection lost")),
    "echo_401_text": ((401, "echo"), (401, "echo")),
    "echo_500_ollama": ((500, "echo"), (500, "echo")),
    "echo_500_openai": ((500, "echo"), (500, "echo")),
}


def test_every_mode_has_an_expectation() -> None:
    assert set(EXPECTED) == set(MODES)


@pytest.fixture
async def faulty() -> AsyncIterator[Callable[[Mode], Awaitable[FaultyUpstream]]]:
    started: list[FaultyUpstream] = []

    async def make(mode: Mode) -> FaultyUpstream:
        up = await FaultyUpstream(mode).start()
        started.append(up)
        return up

    yield make
    for up in started:
        await up.close()


@pytest.fixture
def access_log() -> io.StringIO:
    return capture_access_log()


def secret_routes(up: FaultyUpstream) -> list[dict[str, Any]]:
    """`/h`: header and query auth; `/b`: header and body auth, overridable, so the
    client's own Authorization goes upstream too (and comes back in an echo)."""
    header_query = {
        "header_name": "X-Api-Key",
        "header_value": HEADER_SECRET,
        "param_name": "key",
        "param_value": QUERY_SECRET,
        "param_location": "query",
    }
    header_body = {
        "header_name": "X-Api-Key",
        "header_value": HEADER_SECRET,
        "param_name": "api_key",
        "param_value": BODY_SECRET,
        "param_location": "body",
        "allow_override": True,
    }
    timeouts = {"read_timeout": 2000, "connect_timeout": 2000, "write_timeout": 2000}
    return [
        route(
            target(up.url(), "", auth=header_query, logging=LOGGED),
            path="/h",
            name="h",
            balancer=timeouts,
        ),
        route(
            target(up.url(), "", auth=header_body, logging=LOGGED),
            path="/b",
            name="b",
            balancer=timeouts,
        ),
    ]


async def exchange(
    http: aiohttp.ClientSession, gw: GatewayServer, path: str, stream: bool
) -> tuple[int, str, bytes, str]:
    """One request; everything the client got: status, Content-Type, and the raw header
    lines and body as bytes (to grep)."""
    body = {"model": "llama2", "messages": CHAT, "stream": stream}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with asyncio.timeout(BOUND):
        async with http.post(url(gw, path), json=body, headers=headers) as r:
            data = await r.read()
            raw_head = b"\r\n".join(k + b": " + v for k, v in r.raw_headers)
            return r.status, r.headers.get("Content-Type", ""), raw_head + b"\r\n\r\n" + data, path


def check_answer(
    status: int, ctype: str, everything: bytes, expected: tuple[int, str | None], tname: str
) -> None:
    want_status, want = expected
    assert status == want_status, everything[-300:]
    body = everything.partition(b"\r\n\r\n")[2]
    if status == 200 and ctype.startswith("text/event-stream"):
        events = [e for e in body.split(b"\n\n") if e]
        assert all(e.startswith(b"data: ") for e in events)
        if want is None:
            assert events[-1] == b"data: [DONE]"
        else:  # started, then broke: one error event, no [DONE]
            assert json.loads(events[-1][6:]) == {"error": {"message": want}}
        return
    assert ctype == "application/json"
    doc = json.loads(body)
    if status == 200:
        assert doc["choices"][0]["message"]["content"] == "four"
    elif want == "echo":  # the upstream's page, in OpenAI's error shape, redacted
        assert "[redacted]" in doc["error"]["message"]
    else:
        assert doc == {"error": {"message": (want or "").format(target=tname)}}


def assert_no_secret(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    assert CORE not in text, f"a secret in {where}: {text[max(text.find(CORE) - 80, 0) :][:200]!r}"


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_fault_mode(mode: str, faulty, gateway, http, access_log) -> None:
    up = await faulty(MODES[mode])
    with json_log() as process_log:
        gw = await gateway(*secret_routes(up))
        tname = gw.router.routes[0].targets[0].name
        for path in ("/h", "/b"):
            for i, stream in enumerate((False, True)):
                status, ctype, everything, _ = await exchange(http, gw, path, stream)
                check_answer(status, ctype, everything, EXPECTED[mode][i], tname)
                assert_no_secret(everything, f"the answer ({mode} {path} stream={stream})")
    assert_no_secret(process_log.buf.getvalue(), "the process log")
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert len(lines) == 4, "one access-log line per request"
    for entry in lines:
        payload = entry["ai"]["proxy"]["payload"]
        assert payload["request"] and "[redacted]" not in payload["request"]
        assert_no_secret(json.dumps(entry), "the access log")
    # The secrets did reach the upstream (as they must), so the echoes had them to show.
    query = URL("/").with_query({"key": QUERY_SECRET}).raw_query_string.encode()
    for r in up.requests:
        assert HEADER_SECRET.encode() in r.head
        overridable = r.head.startswith(b"POST /api/chat HTTP/1.1")  # `/b`: no query auth
        if overridable:
            assert json.loads(r.body)["api_key"] == BODY_SECRET
        else:
            assert query in r.head.partition(b"\r\n")[0]
        # The client's own key went only where the target allows an override.
        assert (CLIENT_KEY.encode() in r.head) == overridable, r.head
    if mode.startswith("echo_"):
        responses = [e["ai"]["proxy"]["payload"]["response"] for e in lines]
        assert all("[redacted]" in r for r in responses), "the upstream's echo, redacted"


async def test_an_invalid_header_value_fails_over(faulty, upstream, gateway, http) -> None:
    """A passed-through header value the gateway cannot send (here obs-text, which the
    parser lets through) is an `invalid_header` failure: another target is tried when
    the route fails over on it, and the target is counted with reason `invalid`."""
    bad = await faulty(bad_header_value(b"Retry-After", b"1\xff", "429 Too Many Requests"))
    good = await upstream("ollama")
    gw = await gateway(
        route(
            target(bad.url(), ""),
            target(good, "/api/chat"),
            balancer={
                "algorithm": "priority",
                "failover_criteria": ["error", "timeout", "invalid_header"],
            },
        ),
        route(target(bad.url(), ""), path="/alone", name="alone"),
    )
    first, second = gw.router.routes[0].targets
    async with asyncio.timeout(BOUND):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200
            assert r.headers["X-Gateway-Target"] == second.name
            assert r.headers["X-Gateway-Attempts"] == "2"
        # Without invalid_header in failover_criteria: the client gets 502 at once.
        async with http.post(url(gw, "/alone"), json={"messages": CHAT}) as r:
            assert r.status == 502
            assert await r.json() == {"error": {"message": f"upstream unavailable: {first.name}"}}
    text = gw.metrics.exposition().decode()
    counted = f'llama_gateway_upstream_errors_total{{route="r",target="{first.name}",reason="invalid"}} 1.0'
    assert counted in text


async def test_an_answer_nested_too_deep_is_the_upstreams_fault(faulty, gateway, http) -> None:
    """A 200 the gateway cannot re-serialise (nested past orjson's limit) is an
    unreadable answer: 500 naming why, counted against the target, and no traceback
    logged as if it were our bug."""
    up = await faulty(deep_openai_answer)
    with json_log() as process_log:
        gw = await gateway(route(target(up.url("/v1/chat/completions"), "", fmt="openai")))
        async with asyncio.timeout(BOUND):
            async with http.post(url(gw), json={"messages": CHAT}) as r:
                assert r.status == 500
                assert await r.json() == {
                    "error": {
                        "message": "transformation failed from type llama2://llm/v1/chat: "
                        "the answer is nested too deeply"
                    }
                }
    assert process_log.events("adapter.") == []
    name = gw.router.routes[0].targets[0].name
    counted = (
        f'llama_gateway_upstream_errors_total{{route="r",target="{name}",reason="invalid"}} 1.0'
    )
    assert counted in gw.metrics.exposition().decode()


async def test_a_stream_nested_too_deep_is_the_upstreams_fault(faulty, gateway, http) -> None:
    """A stream frame the gateway cannot re-serialise: before anything was sent it is
    a failed attempt (failover, else 500 naming why); once committed, the stream ends
    with one error event. Either way counted against the target, and no traceback."""
    first = await faulty(deep_stream_first)
    go = asyncio.Event()
    later = await faulty(deep_stream_later(go))
    body = {"messages": CHAT, "stream": True}
    with json_log() as process_log:
        gw = await gateway(
            route(target(first.url("/api/chat"), ""), path="/first", name="first"),
            route(target(later.url("/api/chat"), ""), path="/later", name="later"),
        )
        async with asyncio.timeout(BOUND):
            async with http.post(url(gw, "/first"), json=body) as r:
                assert r.status == 500
                assert await r.json() == {
                    "error": {
                        "message": "transformation failed from type llama2://llm/v1/chat: "
                        "the answer is nested too deeply"
                    }
                }
            async with http.post(url(gw, "/later"), json=body) as r:
                assert r.status == 200
                events = [await r.content.readuntil(b"\n\n") for _ in range(2)]
                go.set()
                events += [e for e in (await r.read()).split(b"\n\n") if e]
    assert len(events) == 3  # two tokens, then the error (and no [DONE])
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["message"] == ("transformation failed: the answer is nested too deeply")
    assert process_log.events("adapter.") == [] and "Traceback" not in process_log.buf.getvalue()
    text = gw.metrics.exposition().decode()
    for route_name in ("first", "later"):
        name = next(r for r in gw.router.routes if r.name == route_name).targets[0].name
        assert f'route="{route_name}",target="{name}",reason="' in text


async def test_an_in_band_stream_error_quoting_the_request_is_redacted(
    faulty, gateway, http, access_log
) -> None:
    """After the stream has started, an upstream's error line that repeats the request
    ends the stream as one error event: with every secret redacted."""
    up = await faulty(stream_error_echo)
    gw = await gateway(*secret_routes(up))
    for path in ("/h", "/b"):
        status, ctype, everything, _ = await exchange(http, gw, path, True)
        assert status == 200 and ctype.startswith("text/event-stream")
        last = everything.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        message = json.loads(last[len(b"data: ") :])["error"]["message"]
        assert message.startswith("bad request: ") and "[redacted]" in message
        assert_no_secret(everything, f"the stream ({path})")
    assert_no_secret(access_log.getvalue(), "the access log")
