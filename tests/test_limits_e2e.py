"""Upstreams that never stop writing: a non-stream body over `max_response_body`, and a
stream frame that never ends. The gateway answers, keeps its memory and fails over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from helpers import route, target, url

CHAT = [{"role": "user", "content": "hi"}]
OLLAMA_LINE = b'{"model":"llama2","message":{"role":"assistant","content":"Hi"},"done":false}\n'

Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _serve(write: Writer) -> tuple[asyncio.Server, str, dict[str, int]]:
    """A raw HTTP/1.1 upstream on 127.0.0.1: reads one request head and body, then
    lets `write` produce the answer; counts connections and how they ended."""
    seen = {"connections": 0, "closed_by_peer": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await write(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            seen["closed_by_peer"] += 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/api/chat", seen


@pytest.fixture
async def raw_upstream() -> AsyncIterator[
    Callable[[Writer], Awaitable[tuple[str, dict[str, int]]]]
]:
    servers: list[asyncio.Server] = []

    async def make(write: Writer) -> tuple[str, dict[str, int]]:
        server, u, seen = await _serve(write)
        servers.append(server)
        return u, seen

    yield make
    for s in servers:
        s.close()


def _endless(content_type: bytes, start: bytes) -> Writer:
    """200, chunked: a document (JSON body or NDJSON line) that never ends (bounded:
    64 MiB, then the upstream stops)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        piece = start + b"x" * 65536
        for _ in range(1024):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()

    return write


_endless_chunked = _endless(b"application/json", b'{"pad":"')
_endless_line = _endless(b"application/x-ndjson", b'{"model":"llama2","pad":"')


async def _big_content_length(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    writer.write(b"Content-Length: 100000000\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(5)  # the gateway must not wait for the body it refuses


async def _line_then_endless(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n")
    writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
    writer.write(b"%x\r\n%s\r\n" % (len(OLLAMA_LINE), OLLAMA_LINE))
    await writer.drain()
    await asyncio.sleep(0.2)  # the first event reaches the client: committed
    piece = b"x" * 65536
    for _ in range(1024):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()


@pytest.mark.parametrize("write", [_endless_chunked, _big_content_length])
async def test_oversized_body_is_502_and_fails_over(
    raw_upstream, upstream, gateway, http, write
) -> None:
    big, seen = await raw_upstream(write)
    good = await upstream("ollama")
    gw = await gateway(
        route(
            target(big, "", weight=100, name="big"),
            target(good, "/api/chat", weight=1),
            max_response_body=1_000_000,
            balancer={"failover_criteria": ["invalid_header"], "max_fails": 1},
        )
    )
    async with http.post(url(gw), json={"model": "big", "messages": CHAT}) as r:
        # `big` is the only target for that model: its failure is the answer.
        assert r.status == 502
        assert (await r.json())["error"]["message"].startswith("upstream unavailable: big@")
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        # Without a model both are candidates: `big` is open now, `good` answers.
        assert r.status == 200
    status = await (await http.get(f"http://127.0.0.1:{gw.status_port}/status")).json()
    big_status = status["routes"][0]["targets"][0]
    assert big_status["failures"] == 1 and big_status["health"]["breaker"] == "open"
    text = await (await http.get(f"http://127.0.0.1:{gw.status_port}/metrics")).text()
    assert 'llama_gateway_upstream_errors_total{route="r",target="big@' in text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("llama_gateway_upstream_errors_total")
        and 'reason="invalid"' in ln
        and "big@" in ln
    )
    assert line.endswith(" 1.0")
    assert seen["connections"] == 1


async def test_oversized_non_stream_error_body_is_refused_too(raw_upstream, gateway, http) -> None:
    async def endless_500(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 50000000\r\n\r\n")
        writer.write(b"x" * 2_000_000)
        await writer.drain()
        await asyncio.sleep(5)

    u, _ = await raw_upstream(endless_500)
    gw = await gateway(route(target(u, ""), max_response_body=1_000_000))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 502


async def test_default_limit_admits_ordinary_answers(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    assert gw.router.routes[0].cfg.max_response_body == 8 * 1024 * 1024
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 200


async def test_stream_frame_that_never_ends_before_commit_fails_the_attempt(
    raw_upstream, gateway, http
) -> None:
    u, seen = await raw_upstream(_endless_line)
    gw = await gateway(route(target(u, "")))
    async with http.post(url(gw), json={"messages": CHAT, "stream": True}) as r:
        assert r.status == 502
        assert (await r.json())["error"]["message"].startswith("upstream unavailable: ")
    assert seen["connections"] == 1


async def test_stream_frame_that_never_ends_after_commit_ends_with_error_event(
    raw_upstream, gateway, http
) -> None:
    u, _ = await raw_upstream(_line_then_endless)
    gw = await gateway(route(target(u, "")))
    async with http.post(url(gw), json={"messages": CHAT, "stream": True}) as r:
        assert r.status == 200
        raw = (await r.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert '"Hi"' in events[0]
    assert json.loads(events[-1][6:]) == {"error": {"message": "upstream stream frame too large"}}
    assert "[DONE]" not in raw
