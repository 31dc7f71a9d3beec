"""Upstream calls in failover terms: per-route timeouts and failure classes.

Failure classes follow Kong's `failover_criteria` vocabulary (SPEC §6.2) so the pipeline
can decide "retry or answer" with a set lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import BalancerConfig
from .http1 import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    Timeouts,
    UpstreamError,
    WriteTimeout,
)


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


def classify(exc: UpstreamError) -> Failure:
    """Map a failed upstream call to a Failure."""
    if isinstance(exc, ConnectTimeout):
        return Failure("timeout", "timeout", "connect timeout")
    if isinstance(exc, ReadTimeout):
        return Failure("timeout", "timeout", "read timeout", read_timeout=True)
    if isinstance(exc, WriteTimeout):
        # The request was not fully sent: no generation can have started.
        return Failure("timeout", "timeout", "write timeout")
    if isinstance(exc, ConnectFailed):
        return Failure("error", "connect", str(exc))
    if isinstance(exc, InvalidResponse):
        return Failure("invalid_header", "invalid", "invalid response from upstream")
    if isinstance(exc, Disconnected) and exc.midway:
        return Failure("error", "reset", "upstream closed the connection mid-response")
    return Failure("error", "reset", "connection reset by upstream")


def timeouts(b: BalancerConfig) -> Timeouts:
    """Per-attempt timeouts from Kong's milliseconds: connect; read = the longest
    silence while waiting for the head or between two body reads; write = the longest
    wait for the socket to take the request."""
    return Timeouts(
        connect=b.connect_timeout / 1000,
        read=b.read_timeout / 1000,
        write=b.write_timeout / 1000,
    )


def upstream_fault(status: int) -> bool:
    """An upstream answer that means the upstream failed (not the client's request)."""
    return status >= 500 or status == 429


def retry_after(pool: list[Any], now: float) -> int:
    """Whole seconds until the earliest open circuit may be tried again (at least 1;
    actively unhealthy targets are re-probed within seconds, so 1 is right for them)."""
    waits = [s.open_until - now for s in pool if s.open_until > now]
    return max(1, math.ceil(min(waits))) if waits else 1


def retryable(failure: Failure, criteria: tuple[str, ...]) -> bool:
    if failure.criterion not in criteria:
        return False
    # A read timeout after the request went out may still be generating upstream:
    # only retried when the operator accepts duplicate work (SPEC §6.2).
    return not failure.read_timeout or "non_idempotent" in criteria
