"""Failed upstream attempts in failover terms: what failed (`Reason`), which Kong
`failover_criteria` word it matches, and whether another attempt may follow.

The vocabulary (`Reason`, `upstream_fault`) lives in `balancers.outcome` because the
breaker counts by it; this module maps the upstream client's exceptions onto it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from balancers import Outcome, Reason, TargetState

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
    """Why one attempt failed."""

    criterion: str  # Kong's failover criterion: error | timeout | invalid_header | http_<n>
    reason: Reason
    detail: str  # human text, never contains secrets or URLs
    read_timeout: bool = False  # timed out after the request was sent (may be generating)
    status: int | None = None  # upstream status (Reason.STATUS; 200 for an unreadable body)

    @property
    def is_timeout(self) -> bool:
        return self.reason is Reason.TIMEOUT

    def outcome(self) -> Outcome:
        """This failure as the balancer hears of it."""
        return Outcome(ok=False, failure=self.reason, status=self.status)


def classify(exc: UpstreamError) -> Failure:
    """Map a failed upstream call to a Failure."""
    if isinstance(exc, ConnectTimeout):
        return Failure("timeout", Reason.TIMEOUT, "connect timeout")
    if isinstance(exc, ReadTimeout):
        return Failure("timeout", Reason.TIMEOUT, "read timeout", read_timeout=True)
    if isinstance(exc, WriteTimeout):
        # The request was not fully sent: no generation can have started.
        return Failure("timeout", Reason.TIMEOUT, "write timeout")
    if isinstance(exc, ConnectFailed):
        return Failure("error", Reason.CONNECT, str(exc))
    if isinstance(exc, InvalidResponse):
        return Failure("invalid_header", Reason.INVALID, str(exc) or "invalid response")
    if isinstance(exc, Disconnected) and exc.midway:
        return Failure("error", Reason.RESET, "upstream closed the connection mid-response")
    return Failure("error", Reason.RESET, "connection reset by upstream")


def status_failure(status: int) -> Failure:
    """An upstream answer other than 200, as a failure (Kong's `http_<status>`)."""
    return Failure(f"http_{status}", Reason.STATUS, f"upstream answered {status}", status=status)


def unreadable(detail: str) -> Failure:
    """A response the adapter could not read (a 200 body, or a stream frame)."""
    return Failure("invalid_header", Reason.INVALID, detail, status=200)


def timeouts(b: BalancerConfig) -> Timeouts:
    """Per-attempt timeouts from Kong's milliseconds: connect; read = the longest
    silence while waiting for the head or between two body reads; write = the longest
    wait for the socket to take the request."""
    return Timeouts(
        connect=b.connect_timeout / 1000,
        read=b.read_timeout / 1000,
        write=b.write_timeout / 1000,
    )


def retry_after(candidates: Sequence[TargetState], now: float) -> int:
    """Whole seconds until the earliest open circuit may be tried again (at least 1;
    actively unhealthy targets are re-probed within seconds, so 1 is right for them)."""
    waits = [s.open_until - now for s in candidates if s.open_until > now]
    return max(1, math.ceil(min(waits))) if waits else 1


def retryable(failure: Failure, criteria: tuple[str, ...]) -> bool:
    if failure.criterion not in criteria:
        return False
    # A read timeout after the request went out may still be generating upstream:
    # only retried when the operator accepts duplicate work.
    return not failure.read_timeout or "non_idempotent" in criteria
