"""What the proxy listener answers before any route (issue 15, findings 3 and 7), over raw
sockets: every gateway-made answer is the JSON error shape (paths, methods, request
lines, headers aiohttp's parser refuses), `Content-Encoding` is refused before the
body is read, and `Expect: 100-continue` gets `100 Continue` only for a body that will
be read."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from helpers import route, target
from rawhttp_kit import Answer, Raw, request

from gateway.server import GatewayServer

CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


async def start(upstream: Any, gateway: Any, **server: Any) -> tuple[GatewayServer, Any]:
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat"), max_request_body_size=1000),
        server=server,
        frontends={"openai": {"prefix": "/v1"}},
    )
    return gw, up


async def one(gw: GatewayServer, data: bytes) -> Answer:
    """Sends `data`, returns the answer; the gateway must then close."""
    c = await Raw.connect(gw.port)
    try:
        await c.send(data)
        a = await c.answer()
        assert a.headers.get("Connection") == "close", a
        await c.closed()
        return a
    finally:
        c.close()


def rejected(gw: GatewayServer, reason: str) -> float:
    series = f'llama_gateway_client_connections_rejected_total{{reason="{reason}"}}'
    for line in gw.metrics.exposition().decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rpartition(" ")[2])
    raise AssertionError(f"{series} not exported")


# ---------------------------------------------------------------- the JSON error shape

MALFORMED = {
    "invalid method token": (b"G(T /chat HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "method the parser does not know": (b"FOO /chat HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "space in a header name": (b"GET /chat HTTP/1.1\r\nHost: gw\r\nBad Name: x\r\n\r\n", 400),
    "header line without a colon": (b"GET /chat HTTP/1.1\r\nHost: gw\r\nnocolon\r\n\r\n", 400),
    "NUL in a header value": (b"GET /chat HTTP/1.1\r\nHost: gw\r\nX: a\x00b\r\n\r\n", 400),
    "bare LF line ends": (b"GET /chat HTTP/1.1\nHost: gw\n\n", 400),
    "unknown HTTP version": (b"GET /chat HTTP/1.7\r\nHost: gw\r\n\r\n", 400),
    "no Host in HTTP/1.1": (b"GET /chat HTTP/1.1\r\n\r\n", 400),
    "two Content-Lengths": (
        b"POST /chat HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        400,
    ),
    "Content-Length with chunked": (
        b"POST /chat HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad chunk size in the first read": (
        b"POST /chat HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "TLS on the plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, 400),
    "request target too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414),
    "header field too long": (
        b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "too many header fields": (
        b"GET / HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(200))
        + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_requests_get_json_errors(upstream, gateway, case: str) -> None:
    gw, up = await start(upstream, gateway)
    data, status = MALFORMED[case]
    a = await one(gw, data)
    assert (a.version, a.status) == ("HTTP/1.1", status), a
    assert a.error() and a.headers["X-Request-Id"]
    assert b"aaaaaaaaaa" not in a.body  # no echo of the oversized bytes
    assert up.generation_requests() == []
    assert rejected(gw, "bad_request") == 1


async def test_newline_in_the_path_is_a_json_404(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request("GET", "/chat%0a/x"))
    a = await c.answer()
    assert a.status == 404 and a.error() == "no route matched"
    await c.send(request(body=CHAT))  # the connection goes on
    assert (await c.answer()).status == 200
    c.close()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
async def test_any_method_on_an_unknown_path_is_a_json_404(upstream, gateway, method) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(method, "/nowhere", body=b""))
    a = await c.answer()
    assert a.status == 404 and a.error() == "no route matched"
    c.close()


async def test_connect_is_refused_with_json_405(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    a = await one(gw, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert a.status == 405 and a.error() == "method CONNECT is not allowed"


async def test_http_0_9_request_is_answered_400_over_http_1_1(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    a = await one(gw, b"GET /chat\r\n\r\n")
    assert (a.version, a.status) == ("HTTP/1.1", 400)
    assert a.error() == "HTTP/0.9 is not supported: send HTTP/1.1"


async def test_request_line_without_version_alone_is_a_partial_head(upstream, gateway) -> None:
    """`GET /\\r\\n` could still be followed by header lines: it is an unfinished head,
    answered 408 when client_header_timeout runs out."""
    gw, _ = await start(upstream, gateway, client_header_timeout=0.5)
    a = await one(gw, b"GET /chat\r\n")
    assert a.status == 408 and a.error() == "client header timeout"


async def test_http_2_in_http_1_framing_is_505(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    a = await one(gw, b"GET /chat HTTP/2.0\r\nHost: gw\r\n\r\n")
    assert (a.version, a.status) == ("HTTP/1.1", 505)
    assert a.error() == "HTTP/2.0 is not supported here: send HTTP/1.1"


async def test_http_1_0_is_served(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(b"POST /chat HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    a = await c.answer()
    assert (a.version, a.status) == ("HTTP/1.0", 200)
    c.close()


# ---------------------------------------------------------------- Content-Encoding


async def test_gzip_body_is_refused_before_it_is_sent(upstream, gateway) -> None:
    """The head alone gets the 415: the body (here a small gzip bomb) is never read,
    let alone inflated."""
    gw, up = await start(upstream, gateway)
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")
    c = await Raw.connect(gw.port)
    await c.send(request(headers={"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}))
    a = await c.answer()
    assert a.status == 415
    assert a.error() == "unsupported content encoding: gzip (accepted: identity)"
    assert a.headers["Accept-Encoding"] == "identity" and a.headers["Connection"] == "close"
    c.close()
    assert up.generation_requests() == []
    assert rejected(gw, "content_encoding") == 1


@pytest.mark.parametrize("coding", ["br", "deflate", "zstd", "GZIP", "x-made-up", "gzip, identity"])
async def test_every_coding_but_identity_is_refused(upstream, gateway, coding) -> None:
    gw, _ = await start(upstream, gateway)
    a = await one(gw, request(body=CHAT, headers={"Content-Encoding": coding}))
    assert a.status == 415 and a.error().startswith("unsupported content encoding: ")


async def test_identity_coding_is_accepted(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(body=CHAT, headers={"Content-Encoding": "Identity"}))
    assert (await c.answer()).status == 200
    c.close()


async def test_coding_value_in_the_error_is_bounded_and_printable(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    a = await one(gw, request(body=CHAT, headers={"Content-Encoding": "x\xe9" + "y" * 500}))
    assert a.status == 415 and len(a.error()) < 120 and "x?yyy" in a.error()


@pytest.mark.parametrize("te", ["gzip, chunked", "deflate,chunked", "x-made-up, chunked"])
async def test_a_transfer_coding_besides_chunked_is_501_before_the_body(upstream, gateway, te):
    """aiohttp would de-chunk the body and hand over the still-gzipped bytes; RFC 9112
    asks for a 501 for a transfer coding the server does not know."""
    gw, up = await start(upstream, gateway)
    body = gzip.compress(CHAT)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    a = await one(gw, request(headers={"Transfer-Encoding": te}) + chunked)
    assert a.status == 501
    assert a.error() == f"unsupported transfer coding: {te} (accepted: chunked)"
    assert up.generation_requests() == []
    assert rejected(gw, "transfer_encoding") == 1


@pytest.mark.parametrize("te", ["chunked", "Chunked", "identity, chunked"])
async def test_plain_chunked_bodies_still_pass(upstream, gateway, te) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(
        request(headers={"Transfer-Encoding": te}) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)
    )
    assert (await c.answer()).status == 200
    c.close()
    assert rejected(gw, "transfer_encoding") == 0


# ---------------------------------------------------------------- Expect


async def expect(gw: GatewayServer, path: str, length: int, value: str = "100-continue") -> Raw:
    c = await Raw.connect(gw.port)
    await c.send(request(path=path, headers={"Expect": value, "Content-Length": str(length)}))
    return c


async def test_expect_within_the_limit_gets_100_then_200(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await expect(gw, "/chat", len(CHAT))
    assert await c.head() == b"HTTP/1.1 100 Continue\r\n\r\n"
    await c.send(CHAT)
    a = await c.answer()
    assert a.status == 200
    await c.send(request(body=CHAT))  # the connection goes on
    assert (await c.answer()).status == 200
    c.close()


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
async def test_expect_over_the_limit_gets_413_without_100(upstream, gateway, path) -> None:
    """The route's limit (1000 bytes here); a front door's is the largest over routes."""
    gw, up = await start(upstream, gateway)
    c = await expect(gw, path, 5000)
    a = await c.answer()  # the first response is the final one: no 100 Continue
    assert a.status == 413 and a.error() == "request body is too large"
    assert a.headers["Connection"] == "close"
    await c.closed()
    assert up.generation_requests() == []


async def test_expect_on_an_unknown_path_gets_404_without_100(upstream, gateway) -> None:
    """Whatever answers without reading the body: no 100, and the connection ends
    (what the client sends next could be its body or a new request)."""
    gw, _ = await start(upstream, gateway)
    c = await expect(gw, "/nowhere", 10)
    a = await c.answer()
    assert a.status == 404 and a.error() == "no route matched"
    assert a.headers["Connection"] == "close"
    await c.closed()


async def test_expect_with_gzip_gets_415_without_100(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    fields = {"Expect": "100-continue", "Content-Encoding": "gzip", "Content-Length": "10"}
    await c.send(request(headers=fields))
    a = await c.answer()
    assert a.status in (415, 417) and a.error()
    c.close()


async def test_unknown_expectation_is_417(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await expect(gw, "/chat", len(CHAT), value="something-else")
    a = await c.answer()
    assert a.status == 417
    assert a.error() == "unsupported Expect header: only 100-continue is accepted"
    assert a.headers["Connection"] == "close"
    await c.closed()
    assert rejected(gw, "expectation") == 1


async def test_expect_sent_body_without_waiting_is_read(upstream, gateway) -> None:
    """A client may send the body without waiting for `100 Continue` (RFC 9110)."""
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    await c.send(request(body=CHAT, headers={"Expect": "100-continue"}))
    a = await c.answer()
    assert a.status == 200
    c.close()


async def test_expect_is_ignored_in_http_1_0(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    c = await Raw.connect(gw.port)
    head = b"POST /chat HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    await c.send(head % len(CHAT))
    await asyncio.sleep(0.2)
    await c.send(CHAT)
    a = await c.answer()
    assert a.status == 200  # and no interim answer came first
    c.close()


async def test_the_status_listener_answers_json_errors_too(gateway, upstream, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    base = f"http://127.0.0.1:{gw.status_port}"
    async with http.get(base + "/nope") as r:
        assert r.status == 404 and await r.json() == {"error": {"message": "not found"}}
    async with http.post(base + "/metrics") as r:
        assert r.status == 405 and r.headers["Allow"] == "GET,HEAD"
        assert (await r.json())["error"]["message"] == "method not allowed"


async def test_a_second_content_encoding_line_does_not_slip_past(upstream, gateway) -> None:
    gw, _ = await start(upstream, gateway)
    head = b"POST /chat HTTP/1.1\r\nHost: gw\r\nContent-Encoding: identity\r\n"
    head += b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(CHAT)
    a = await one(gw, head + CHAT)
    assert a.status == 415
    assert a.error() == "unsupported content encoding: identity, gzip (accepted: identity)"


async def test_a_bug_while_screening_is_a_json_500_not_a_hang(upstream, gateway, monkeypatch):
    import gateway.clientconn as clientconn

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(clientconn, "screen", broken)
    gw, up = await start(upstream, gateway)
    a = await one(gw, request(body=CHAT, headers={"Expect": "100-continue"}))
    assert a.status == 500 and a.error() == "internal gateway error"
    assert up.generation_requests() == []
