"""The one balancer interface and the per-target state every component shares.

State lives on `TargetState`, in one place: algorithms read it to choose, and the
pipeline (request outcomes), the breaker and the health checker write it. Everything
runs on one event loop, so plain attributes are enough (no locks).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(slots=True, eq=False)
class TargetState:
    index: int  # position in the route's target list
    name: str
    weight: int
    in_flight: int = 0
    requests: int = 0  # attempts sent to this target
    failures: int = 0  # attempts that failed (transport or failover-worthy status)
    healthy: bool = True  # active health checks (a target starts healthy)
    open_until: float = 0.0  # circuit breaker: skipped while clock() < open_until
    last_change: float = field(default_factory=time.time)  # wall time of last health change

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.open_until


@dataclass(slots=True)
class PickContext:
    """What a balancer may know about the request it picks for."""

    tried: list[TargetState] = field(default_factory=list)  # in attempt order
    hash_key: str | None = None  # consistent-hashing key (header value), if any


@dataclass(slots=True)
class Outcome:
    """One attempt's result, reported back to the balancer that picked it."""

    ok: bool
    latency: float = 0.0  # seconds, whole request (for streams, the whole stream)
    ttft: float | None = None  # seconds to the first token
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    failure: str | None = None  # connect | reset | timeout | status | invalid | midstream
    status: int | None = None  # upstream HTTP status when failure == "status"


class Balancer(ABC):
    """Chooses one target among `candidates` for one attempt of one request.

    `candidates` is the subset allowed by the request (model rules) in config order;
    the balancer skips unavailable targets and, while an untried one exists, tried ones.
    Returning None means: no target can be tried now.
    """

    def __init__(self, states: Sequence[TargetState], clock: Clock = time.monotonic) -> None:
        self.states = list(states)
        self.clock = clock

    def eligible(self, candidates: Sequence[TargetState], ctx: PickContext) -> list[TargetState]:
        now = self.clock()
        avail = [s for s in candidates if s.available(now)]
        if ctx.tried:
            fresh = [s for s in avail if s not in ctx.tried]
            if fresh:
                return fresh
        return avail

    @abstractmethod
    def pick(self, candidates: Sequence[TargetState], ctx: PickContext) -> TargetState | None: ...

    def report(self, state: TargetState, outcome: Outcome) -> None:  # noqa: B027
        """Learn from an attempt; algorithms that score targets override this."""
