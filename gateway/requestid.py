"""Request ids: one per client request, the client's `X-Request-Id` when it is a sane
one, else a fresh one. The same id goes upstream (`X-Request-Id`), back to the client
on every answer of the proxy listener (successes, errors, streams, 404s) and into the
access log line and the RequestRecord.

A client's id is kept when it is 1 to 128 characters from `A-Z a-z 0-9 . _ : @ / + = -`
(enough for UUIDs, W3C trace ids, ULIDs, base64); anything else (too long, spaces,
control or non-ASCII bytes) is replaced by a fresh one instead of being echoed into our
answer, the upstream request and the logs. A fresh id is 32 hex digits of os.urandom:
unique across processes and restarts without coordination, about 0.5 µs.
"""

from __future__ import annotations

import os
import re

from aiohttp import web

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_SANE = re.compile(rf"[A-Za-z0-9._:@/+=\-]{{1,{MAX_LENGTH}}}")
KEY = web.RequestKey("request_id", str)


def new_id() -> str:
    return os.urandom(16).hex()


def sane(value: str) -> bool:
    """Whether a client's id is kept as it is (see the module doc)."""
    return _SANE.fullmatch(value) is not None


def assign(request: web.BaseRequest) -> str:
    """Decide `request`'s id and keep it on the request: the pipeline's first step
    (no lookup first, as nothing can have decided it before)."""
    sent = request.headers.get(HEADER)
    rid = sent if sent is not None and _SANE.fullmatch(sent) is not None else new_id()
    request[KEY] = rid
    return rid


def of(request: web.BaseRequest) -> str:
    """`request`'s id: the one decided before, or one decided now."""
    try:
        return request[KEY]
    except KeyError:
        return assign(request)


def field(rid: str) -> bytes:
    """The upstream request's header line (the client's own is never forwarded)."""
    return b"X-Request-Id: " + rid.encode("ascii") + b"\r\n"
