"""What the pipeline tells observers about one finished client request.

The pipeline fills a `RequestRecord` as it goes and hands it to every observer once, at
the end (also when the client went away). Observers (metrics, access log) never reach
into aiohttp requests; everything they may use is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from balancers import Reason

from .adapters.base import Usage

if TYPE_CHECKING:
    from .routing import Route, Target
    from .security.keyauth import Hidden
    from .security.ratelimit import Admitted

# Outcomes (a small fixed set: metric label values).
SUCCESS = "success"
CLIENT_ERROR = "client_error"  # rejected by the gateway (4xx) or an upstream 4xx passed through
UPSTREAM_ERROR = "upstream_error"  # upstream 5xx, transport failure, broken stream, none healthy
GATEWAY_ERROR = "gateway_error"  # our own fault (internal error)
CANCELLED = "cancelled"  # the client went away before the answer was complete


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """An attempt that did not produce the answer."""

    target: Target
    reason: Reason
    fault: bool  # a target failure (breaker, /status, upstream_errors); False: e.g. a
    # client-caused 4xx the route fails over on


@dataclass(slots=True)
class RequestRecord:
    route: Route
    started: float  # monotonic
    wall_started: float
    request_id: str = ""  # X-Request-Id: the client's when sane, else ours (requestid.py)
    client_ip: str | None = None  # for the access log only: set when the route logs
    stream: bool = False
    body_size: int = 0
    status: int = 0
    outcome: str = ""
    target: Target | None = None  # the target that produced the answer (or the last tried)
    answered_by_upstream: bool = False  # an upstream's answer (any status) reached the client
    request_model: str | None = None  # the client's `model` value, when a string
    response_model: str | None = None  # effective model sent upstream
    attempts: int = 0
    failures: list[FailedAttempt] = field(default_factory=list)  # in attempt order
    proxy_latency: float | None = None  # seconds spent before the answering attempt was sent
    upstream_latency: float | None = None  # seconds from sending to the upstream's response head
    ttft: float | None = None  # seconds from request start to the first answer byte
    duration: float = 0.0  # seconds, whole request (for streams the whole stream)
    usage: Usage | None = None
    queue_wait: float | None = None  # seconds waited in the admission queue, if queued
    queue_rejected: str | None = None  # full | timeout: refused by the admission queue
    error: str | None = None  # gateway-made error text, or the mid-stream error
    # The bytes aiohttp already holds for this request (a reference, not a copy); read
    # only by the access log when the target has log_payloads.
    request_body: bytes | None = None
    response_body: bytes | None = None
    # Key-auth and rate limits (gateway/security): the consumer's username (a config
    # value: a bounded metric label), why the door refused the request, and the
    # rate-limit headers every answer of an admitted request carries.
    consumer: str | None = None
    auth_rejected: str | None = None  # missing | invalid | duplicate | forbidden
    rate_limited: str | None = None  # requests | tokens | store
    extra_headers: dict[str, str] | None = None
    # Values this request's answer and log lines must not show (the client's own key),
    # besides the route's configured secrets.
    secrets: tuple[str, ...] = ()
    # key-auth's hide_credentials: where the client's key was, to keep it from upstreams.
    hide: Hidden | None = None
    # An admitted rate-limited request: who its tokens are charged to when it is done.
    admitted: Admitted | None = None

    @property
    def cost(self) -> float:
        t = self.target
        u = self.usage
        if t is None or u is None:
            return 0.0
        o = t.cfg.options
        return (
            u.prompt_tokens * (o.input_cost or 0.0) + u.completion_tokens * (o.output_cost or 0.0)
        ) / 1e6


class Observer(Protocol):
    def finished(self, rec: RequestRecord) -> None: ...


def outcome_of(rec: RequestRecord) -> str:
    """The outcome of a finished request the pipeline did not name itself."""
    if rec.status == 200:
        return SUCCESS if rec.error is None else UPSTREAM_ERROR
    if 400 <= rec.status < 500:
        return CLIENT_ERROR
    return UPSTREAM_ERROR
