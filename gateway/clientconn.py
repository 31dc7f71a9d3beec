"""The proxy listener's client connections: slow, idle, excess and malformed clients.

`ClientServer` is aiohttp's low-level `web.Server` for the proxy listener (no router:
every request goes to the gateway's own dispatch, so nothing answers with aiohttp's
text pages). Each connection is a `ClientConnection`, aiohttp's `RequestHandler` with
one timer: the one aiohttp already keeps for keep-alive, re-aimed at the deadline that
applies now (nginx's settings and meaning, docs/operations.md "Client limits"):

- a new connection must deliver a whole request head within `client_header_timeout`;
  on a kept-alive connection the clock starts at the first byte of the next head.
  When it expires: `408` if part of a head came, else the connection is just closed;
- between requests, `keepalive_timeout`;
- while a handler waits for body bytes (`intake.read_body` asks for them through
  `await_body`), at most `client_body_timeout` between two reads, and the whole body
  by `client_body_timeout` plus one second per `client_body_min_rate` bytes received
  (so a byte every few seconds cannot hold a connection for ever): the read fails
  with `BodyError(408)` and the connection closes after that answer;
- over `max_connections` open connections, a new one gets `503` and is closed before
  anything of it is read.

A parser error in the middle of a body (a bad chunk size) fails the body read at once
(400) instead of leaving the handler waiting for bytes that can never come.

Cost on the hot path: a head that arrives in one read (the usual case) costs one
`_messages` check; the timer is only moved when a head or a body is slow, and moving it
later is free (it fires, sees the later deadline and sleeps again, as aiohttp's does).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import hdrs, web, web_protocol
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader

from . import errors, requestid
from .clientreq import (
    BAD_REQUEST,
    CONTENT_ENCODING,
    EXPECTATION,
    TRANSFER_ENCODING,
    ProxyRequest,
    client_error,
    screen,
)

log = logging.getLogger("llama_gateway")

HEADER_TIMEOUT = "client header timeout"
BODY_TIMEOUT = "client body timeout"
TOO_MANY = "too many connections"
# llama_gateway_client_connections_rejected_total{reason}: these and clientreq's.
MAX_CONNECTIONS, IDLE_TIMEOUT = "max_connections", "idle_timeout"
HEADER_TIMEOUT_REASON, BODY_TIMEOUT_REASON = "header_timeout", "body_timeout"
REASONS = (
    MAX_CONNECTIONS,
    IDLE_TIMEOUT,
    HEADER_TIMEOUT_REASON,
    BODY_TIMEOUT_REASON,
    BAD_REQUEST,
    CONTENT_ENCODING,
    EXPECTATION,
    TRANSFER_ENCODING,
)

_NEVER = 3e8  # "no limit" as a finite delay: uvloop timers cannot take infinity
_JSON = "application/json"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyError(Exception):
    """Why a body read failed on the client's side (timeout, malformed framing); the
    reader turns it into its answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def raw_answer(status: int, reason: str, message: str) -> bytes:
    """A whole error answer for a connection that has no request to answer through."""
    body = errors.error_body(message)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"{requestid.HEADER}: {requestid.new_id()}\r\n\r\n"
    )
    return head.encode("ascii") + body


class ClientConnection(web_protocol.RequestHandler):
    __slots__ = (
        "_body",
        "_body_by",
        "_body_timeout",
        "_head",
        "_header_timeout",
        "_srv",
        "closing",
    )

    def __init__(self, manager: ClientServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._srv = manager
        # The answer being made is this connection's last (ProxyRequest marks it so).
        self.closing = False
        self._head = False  # part of a head came while waiting for the next request
        self._body: StreamReader | None = None  # a body a handler waits for
        self._body_by = 0.0  # when the whole body must be in (moves with each byte)
        self._header_timeout = manager.header_timeout or _NEVER
        self._body_timeout = manager.body_timeout or _NEVER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        srv = self._srv
        if srv.max_connections and srv.open >= srv.max_connections:
            srv.count(MAX_CONNECTIONS)
            self._manager = None  # so connection_lost has nothing to undo
            writer = cast(asyncio.Transport, transport)
            writer.write(raw_answer(503, "Service Unavailable", TOO_MANY))
            writer.close()
            return
        srv.open += 1
        super().connection_made(transport)
        now = self._loop.time()
        self._arm(now + self._header_timeout, now)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._manager is not None:
            self._srv.open -= 1
        super().connection_lost(exc)

    def close(self) -> None:
        # Also the drain's way to end idle connections: answers still being made
        # then say `Connection: close`.
        self.closing = True
        super().close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:  # a head is complete, or the parser failed
            self._head = False
            if self._current_request is not None:
                self._parse_failed(self._current_request)
        elif self._body is not None:
            if data:  # progress: the next read gets its own client_body_timeout
                rate = self._srv.body_min_rate
                if rate:
                    self._body_by += len(data) / rate
                next_read = self._loop.time() + self._body_timeout
                self._next_keepalive_close_time = min(next_read, self._body_by)
        elif data and not self._head and (self._waiter is not None or not self._request_count):
            # Between requests, or the first head, whose bytes may come before aiohttp's
            # reader task has started waiting for them.
            self._head = True
            if self._request_count:  # kept alive: this head's clock starts now
                now = self._loop.time()
                self._arm(now + self._header_timeout, now)

    def _arm(self, deadline: float, now: float) -> None:
        """Make the timer fire by `deadline` (a later one needs no new timer)."""
        self._next_keepalive_close_time = deadline
        at = self._wake_at(deadline, now)
        handle = self._keepalive_handle
        if handle is not None:
            if cast(asyncio.TimerHandle, handle).when() <= at:
                return
            handle.cancel()
        self._keepalive_handle = self._loop.call_at(at, self._process_keepalive)

    def _wake_at(self, deadline: float, now: float) -> float:
        # Never more than keepalive_timeout ahead: aiohttp sets the idle deadline when
        # a request ends but only schedules the timer when there is none, so a timer
        # left further out (by a longer header or body timeout) would close the idle
        # connection late.
        return min(deadline, now + self._keepalive_timeout)

    def _process_keepalive(self) -> None:
        # aiohttp's keep-alive timer callback, for all three deadlines.
        self._keepalive_handle = None
        if self._force_close or self.transport is None:
            return
        deadline = self._next_keepalive_close_time
        now = self._loop.time()
        if now < deadline:
            at = self._wake_at(deadline, now)
            self._keepalive_handle = self._loop.call_at(at, self._process_keepalive)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # between requests
            if self._head:
                self._srv.count(HEADER_TIMEOUT_REASON)
                self.transport.write(raw_answer(408, "Request Timeout", HEADER_TIMEOUT))
            elif not self._request_count:
                self._srv.count(IDLE_TIMEOUT)  # connected, never sent a byte
            self.force_close()
        elif self._body is not None and not self._body.is_eof():
            self._srv.count(BODY_TIMEOUT_REASON)
            self._fail_body(self._body, BodyError(408, BODY_TIMEOUT))
        # else a handler is at work: the end of its request re-arms the timer

    def _parse_failed(self, request: web.BaseRequest) -> None:
        """The parser failed while `request` is handled: its body can never complete."""
        err = self._messages[-1][0]
        if isinstance(err, web_protocol._ErrInfo):
            payload = request.content
            if not payload.is_eof() and payload.exception() is None:
                self._srv.count(BAD_REQUEST)
                _, text = client_error(err.exc, err.message)
                self._fail_body(payload, BodyError(400, "malformed request body: " + text))

    def _fail_body(self, payload: StreamReader, exc: BodyError) -> None:
        # Nothing more is read: the body is broken or trickling.
        self.end_after_answer()
        self.close()
        payload.set_exception(exc)

    def end_after_answer(self) -> None:
        """The answer being made is the connection's last (`Connection: close`), and
        the connection closes right after it instead of reading on (aiohttp lingers up
        to 10 s over an unread body): for a body refused or failed unread."""
        self.closing = True
        self._lingering_time = 0.0

    # ------------------------------------------------------------------ for readers

    def body_wanted(self, request: web.BaseRequest) -> None:
        if isinstance(request, ProxyRequest) and request.continue_owed:
            request.continue_owed = False
            if self.transport is not None:
                self.transport.write(_CONTINUE)
        self._body = request.content
        now = self._loop.time()
        self._body_by = now + self._body_timeout if self._srv.body_min_rate else _NEVER + now
        self._arm(now + self._body_timeout, now)

    def body_done(self) -> None:
        self._body = None

    # ------------------------------------------------------------------ parser errors

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (and to a handler that
        raised): the gateway's JSON error shape instead of a text page."""
        if status < 500:
            self._srv.count(BAD_REQUEST)
            status, text = client_error(exc, message)
            log.debug("bad request from %s: %s", request.remote, text)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = errors.INTERNAL
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was started: no error answer can follow")
        resp = web.Response(status=status, body=errors.error_body(text), content_type=_JSON)
        resp.force_close()
        return resp


class ClientServer(web.Server):
    """The proxy listener's `web.Server`: its connections are `ClientConnection`s, its
    requests `ProxyRequest`s. `count(reason)` counts what is refused."""

    def __init__(
        self,
        handler: Callable[[ProxyRequest], Awaitable[web.StreamResponse]],
        *,
        header_timeout: float,
        body_timeout: float,
        keepalive_timeout: float,
        max_connections: int,
        count: Callable[[str], None],
        body_min_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            cast(Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], handler),
            request_factory=self._request,
            keepalive_timeout=keepalive_timeout or _NEVER,
            auto_decompress=False,  # encoded bodies are refused, never inflated (clientreq)
            **kwargs,
        )
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate  # bytes/s a body keeps up after body_timeout
        self.max_connections = max_connections
        self.count = count
        self.open = 0  # connections counted against max_connections

    def __call__(self) -> ClientConnection:
        return ClientConnection(self, loop=self._loop, **self._kwargs)

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web_protocol.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> ProxyRequest:
        headers = message.headers
        if (
            message.version is not HttpVersion11
            or message.upgrade
            or hdrs.CONTENT_ENCODING in headers
            or hdrs.EXPECT in headers
            or _coded(headers.get(hdrs.TRANSFER_ENCODING), headers)
        ):
            try:
                request, reason = screen(message, payload, protocol, writer, task, self._loop)
            except Exception:  # a bug here would leave the client with no answer at all
                log.exception("screening a request failed")
                request = ProxyRequest(
                    message, payload, protocol, writer, task, self._loop, client_max_size=0
                )
                request.refusal = web.Response(
                    status=500, body=errors.error_body(errors.INTERNAL), content_type=_JSON
                )
                reason = BAD_REQUEST
            if reason is not None:
                self.count(reason)
                cast(ClientConnection, protocol).end_after_answer()
            return request
        return ProxyRequest(message, payload, protocol, writer, task, self._loop, client_max_size=0)


def _coded(te: str | None, headers: Any) -> bool:
    """A Transfer-Encoding other than one plain `chunked` line (screened)."""
    return te is not None and (te != "chunked" or len(headers.getall(hdrs.TRANSFER_ENCODING)) > 1)


def await_body(request: web.BaseRequest) -> ClientConnection | None:
    """Before waiting for `request`'s body: sends an owed `100 Continue` and watches
    the reads (`client_body_timeout`); call `body_done()` on the result after."""
    conn = request.protocol
    if not isinstance(conn, ClientConnection):
        return None
    conn.body_wanted(request)
    return conn


def fd_headroom(max_connections: int) -> None:
    """Raise the soft open-files limit toward the hard one when `max_connections`
    needs it (a client connection can hold an upstream one too), and say so when it
    stays short: past it accept() fails and nobody gets an answer, not even a 503."""
    if not max_connections:
        return
    want = 2 * max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if soft != inf and soft < want:
        new = want if hard == inf else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != inf and soft < max_connections + 64:
        log.warning(
            "open-files limit %d is below server.max_connections %d: past it new "
            "connections fail without an answer (raise the limit or lower the setting)",
            soft,
            max_connections,
        )
