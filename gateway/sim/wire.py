"""Per-request HTTP plumbing every dialect shares: the record of each request a fake
received (`Received`, what tests assert on), reading it back in a handler, and the two
ways a fake answers outside a stream (a JSON body, or a cut connection).

Recording happens once, in the server's middleware, before any fault knob or auth
check, so the log holds every request that reached the socket, refused or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import jsonutil


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any | None


# Newer aiohttp wants typed request keys (and warns on plain strings); 3.9 has none.
_RECEIVED_KEY: Any = (
    web.RequestKey("sim_received", Received) if hasattr(web, "RequestKey") else "sim_received"
)


def json_response(
    obj: Any, status: int = 200, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        body=jsonutil.dumps(obj), status=status, headers={"Content-Type": content_type}
    )


def received_of(request: web.Request) -> Received:
    rec: Received = request[_RECEIVED_KEY]
    return rec


def body_of(request: web.Request) -> dict[str, Any] | None:
    """The request's JSON object, or None when the body is not one (each dialect words
    that error its own way)."""
    doc = received_of(request).json
    return doc if isinstance(doc, dict) else None


async def record(request: web.Request, log: list[Received]) -> Received:
    body = await request.read()
    doc: Any | None = None
    if body:
        with contextlib.suppress(jsonutil.JSONDecodeError):
            doc = jsonutil.loads(body)
    rec = Received(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers=request.headers.copy(),
        body=body,
        json=doc,
    )
    log.append(rec)
    request[_RECEIVED_KEY] = rec
    return rec


def abort(request: web.Request) -> web.Response:
    """Close the connection at once, dropping anything not yet sent.

    The returned response is never delivered: aiohttp sees the closing transport when
    it tries to send it and drops it quietly as a premature disconnect.
    """
    if request.transport is not None:
        request.transport.abort()
    return web.Response()
