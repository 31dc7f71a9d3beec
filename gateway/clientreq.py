"""Requests of the proxy listener: what is refused before any route sees them, and the
JSON words for what aiohttp's parser refused.

`ProxyRequest` is the proxy listener's request class (made by `clientconn.ClientServer`).
`screen` runs only for the few requests that need a look (not HTTP/1.1, an upgrade,
`Content-Encoding` or `Expect` present) and gives them a `refusal`, an answer the
dispatch returns before anything else (docs/operations.md, "Client limits"):

- HTTP/0.9 (a request line without a version) → 400, HTTP/2.0 and up in HTTP/1 framing
  → 505, answered as HTTP/1.1 and the connection closed;
- `CONNECT` → 405 (the gateway is no forward proxy; the rest of such a connection
  would be tunnel bytes);
- `Content-Encoding` other than `identity` → 415 before the body is read: bodies are
  never decompressed (a small gzip body can inflate to gigabytes);
- a transfer coding besides `chunked` (`Transfer-Encoding: gzip, chunked`) → 501, as
  RFC 9112 asks: aiohttp would hand over the still-coded bytes as the body;
- `Expect` other than `100-continue` → 417. `100-continue` itself is honoured when the
  body is read (`continue_owed`): a request answered before (404, 413, 401, …) gets
  its answer without `100 Continue`, and the connection closes after it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web, web_protocol
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from . import requestid
from .errors import error_body

if TYPE_CHECKING:
    from .clientconn import ClientConnection

# Reasons of llama_gateway_client_connections_rejected_total (with clientconn's).
BAD_REQUEST, CONTENT_ENCODING, EXPECTATION = "bad_request", "content_encoding", "expectation"
TRANSFER_ENCODING = "transfer_encoding"
ACCEPTED_ENCODINGS = ("identity",)
_JSON = "application/json"
# aiohttp answers what it could not parse through this stand-in request; ours says 1.1.
_ERROR_11 = web_protocol.ERROR._replace(version=HttpVersion11)


class ProxyRequest(web.Request):
    ATTRS = web.Request.ATTRS | frozenset(["refusal", "continue_owed"])
    _protocol: ClientConnection

    refusal: web.Response | None = None  # answered instead of dispatching
    continue_owed = False  # `Expect: 100-continue`, not answered yet

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # Every answer, whoever made it: the request id, and `Connection: close` when
        # the connection ends after it (a refused or timed-out body, a drain).
        response.headers[requestid.HEADER] = requestid.of(self)
        if self.continue_owed and not self._payload.is_eof():
            # Answered without reading the body (404, 413, 401, …): the client, still
            # waiting for `100 Continue`, gets none, and this is the connection's end
            # (what it sends next could be the body or a new request).
            self._protocol.end_after_answer()
        if self._protocol.closing:
            response.force_close()
            response.headers[hdrs.CONNECTION] = "close"


def screen(
    message: RawRequestMessage,
    payload: Any,
    protocol: Any,
    writer: Any,
    task: asyncio.Task[None],
    loop: asyncio.AbstractEventLoop,
) -> tuple[ProxyRequest, str | None]:
    """The request for `message`, with its refusal if it has one, and the reason to
    count it under."""
    if message is web_protocol.ERROR:
        message = _ERROR_11
    status, text, reason, extra = 0, "", BAD_REQUEST, {}
    owed = False
    version = message.version
    if version is not HttpVersion11 and version is not HttpVersion10 and message is not _ERROR_11:
        if version < HttpVersion10:
            status, text = 400, "HTTP/0.9 is not supported: send HTTP/1.1"
        else:
            status, text = 505, f"HTTP/{version.major}.{version.minor} is not supported here"
            text += ": send HTTP/1.1"
        message = message._replace(version=HttpVersion11, should_close=True)
    elif message.method == hdrs.METH_CONNECT:
        status, text = 405, "method CONNECT is not allowed"
    elif message is not _ERROR_11:  # (a parser error's stand-in has no real headers)
        headers = message.headers
        expect = headers.get(hdrs.EXPECT)
        # Every field line: a second one (`identity`, then `gzip`) must not slip past.
        coding = ", ".join(headers.getall(hdrs.CONTENT_ENCODING, ())) or None
        if expect is not None and version is HttpVersion11:  # HTTP/1.0: ignored (RFC 9110)
            if expect.strip().lower() == "100-continue":
                owed = True
            else:
                status, reason = 417, EXPECTATION
                text = "unsupported Expect header: only 100-continue is accepted"
        if not status and coding is not None and coding.strip().lower() not in ("", "identity"):
            status, reason = 415, CONTENT_ENCODING
            text = f"unsupported content encoding: {printable(coding, 40)} (accepted: identity)"
            extra = {hdrs.ACCEPT_ENCODING: ", ".join(ACCEPTED_ENCODINGS)}
        te = ", ".join(headers.getall(hdrs.TRANSFER_ENCODING, ())) or None
        if not status and te is not None and unknown_transfer_coding(te):
            status, reason = 501, TRANSFER_ENCODING
            text = f"unsupported transfer coding: {printable(te, 40)} (accepted: chunked)"
    request = ProxyRequest(message, payload, protocol, writer, task, loop, client_max_size=0)
    if owed:
        request.continue_owed = True
    if not status:
        return request, None
    request.refusal = web.Response(
        status=status, body=error_body(text), content_type=_JSON, headers=extra
    )
    return request, reason


def unknown_transfer_coding(value: str) -> bool:
    """Whether a Transfer-Encoding value names a coding besides chunked (and the
    no-op identity, which aiohttp lets through)."""
    return any(c.strip().lower() not in ("chunked", "identity") for c in value.split(","))


def client_error(exc: BaseException | None, message: str | None) -> tuple[int, str]:
    """Status and words for a request aiohttp's parser refused (no client bytes
    repeated beyond a short printable excerpt)."""
    if isinstance(exc, LineTooLong):
        # The request target is gathered in a bytearray, header fields in bytes.
        if exc.args and isinstance(exc.args[0], bytearray):
            return 414, "request target too long"
        return 431, "request header field too long"
    text = message or (exc.message if isinstance(exc, HttpProcessingError) else "") or ""
    parts = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line == "^" or line.startswith(("b'", 'b"', "bytearray(")):
            continue
        parts.append(line.rstrip(":").strip())
    detail = printable(": ".join(parts), 160)
    if detail.startswith("Too many headers"):
        return 431, "too many request header fields"
    return 400, ("bad request: " + detail) if detail else "bad request"


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters of printable ASCII (others become `?`), safe
    to put in an answer."""
    cut = text[:limit]
    out = "".join(c if " " <= c <= "~" else "?" for c in cut)
    return out + "..." if len(text) > limit else out
