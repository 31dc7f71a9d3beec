"""Upstream HTTP: the one shared ClientSession, per-route timeouts, failure classes.

Failure classes follow Kong's `failover_criteria` vocabulary (SPEC §6.2) so the pipeline
can decide "retry or answer" with a set lookup.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import BalancerConfig


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one attempt failed, in failover-criteria terms."""

    criterion: str  # error | timeout | invalid_header | http_<status>
    reason: str  # metrics label: connect | reset | timeout | invalid | status | midstream
    detail: str  # human text, never contains secrets or URLs
    read_timeout: bool = False  # timed out after the request was sent (SPEC §6.2)
    status: int | None = None  # upstream status for http_<status>

    @property
    def is_timeout(self) -> bool:
        return self.criterion == "timeout"


def classify(exc: BaseException) -> Failure:
    """Map an aiohttp/asyncio exception raised by an upstream call to a Failure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure("timeout", "timeout", "connect timeout")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return Failure("timeout", "timeout", "read timeout", read_timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure("error", "connect", "connection refused or unreachable")
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp raises this for a malformed status line or headers.
        return Failure("invalid_header", "invalid", "invalid response from upstream")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure("error", "reset", "upstream closed the connection mid-response")
    return Failure("error", "reset", "connection reset by upstream")


def client_timeout(b: BalancerConfig) -> aiohttp.ClientTimeout:
    """Per-attempt timeouts: connect, and read = the longest silence between two reads
    (also while waiting for the response head). aiohttp has no socket write timeout;
    `write_timeout` is accepted for Kong compatibility (see README)."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=None,
        sock_connect=b.connect_timeout / 1000,
        sock_read=b.read_timeout / 1000,
    )


class ReuseFlag:
    """Set when the current request went out on a pooled (reused) connection."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


# The flag of the request being sent in this task (contextvars follow the task, so
# concurrent requests never see each other's flag).
current_reuse: ContextVar[ReuseFlag | None] = ContextVar("llama_gateway_reuse", default=None)


class _Connector(aiohttp.TCPConnector):
    """Tells the pipeline whether a request got a pooled connection (SPEC §6.2's stale
    keep-alive rule). aiohttp's tracing API could say the same, but costs ~15 µs per
    request; this hook costs well under one. If aiohttp ever renames `_get`, nothing
    is marked and stale connections are simply not resent (never a duplicate request);
    tests/test_errors_e2e.py notices."""

    async def _get(self, key: Any, traces: Any) -> Any:  # type: ignore[override]
        conn = await super()._get(key, traces)
        if conn is not None:
            flag = current_reuse.get()
            if flag is not None:
                flag.value = True
        return conn


def make_session() -> aiohttp.ClientSession:
    """One session for every upstream: pooled keep-alive connections, no cookies."""
    connector = _Connector(
        limit=0,  # concurrency is bounded by clients, not by an arbitrary pool size
        limit_per_host=0,
        keepalive_timeout=30,
        ttl_dns_cache=60,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # we ask for identity; never pay for gunzip we did not ask for
        trust_env=False,
        skip_auto_headers=("User-Agent",),
    )
