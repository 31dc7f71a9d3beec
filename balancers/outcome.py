"""What an attempt's result is, in the one vocabulary every part uses.

`Reason` names why an attempt failed; the pipeline classifies with it, the breaker
counts by it, metrics label with it and the access log prints it. `upstream_fault`
is the one answer to "does this upstream status mean the upstream failed?".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why an upstream attempt failed (also the `reason` metric label values)."""

    CONNECT = "connect"  # refused, unreachable, name or TLS failure
    RESET = "reset"  # the connection ended before the response did
    TIMEOUT = "timeout"  # connect, write or read timeout
    INVALID = "invalid"  # not a readable response (framing, size limits, dialect)
    STATUS = "status"  # an HTTP status that is not a success
    MIDSTREAM = "midstream"  # a stream broke after it had started


def upstream_fault(status: int) -> bool:
    """An upstream status that means the upstream failed, not the client's request:
    every 5xx and 429 (overloaded). Other 4xx are the client's doing."""
    return status >= 500 or status == 429


@dataclass(slots=True)
class Outcome:
    """One attempt's result, reported back to the balancer that picked it."""

    ok: bool
    latency: float = 0.0  # seconds, whole request (for streams, the whole stream)
    ttft: float | None = None  # seconds to the first token
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    failure: Reason | None = None  # None with ok=False: ended without a verdict
    status: int | None = None  # upstream HTTP status when failure is STATUS

    @property
    def counts(self) -> bool:
        """Is this a target failure (breaker count, latency penalty, failure counter)?"""
        if self.ok or self.failure is None:
            return False  # ok=False without a reason: the client went away
        if self.failure == Reason.STATUS:
            return self.status is not None and upstream_fault(self.status)
        return True
