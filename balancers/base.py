"""The one balancer interface and the per-target state every component shares.

State lives on `TargetState`, in one place, and each field has one writer: the
balancer (`pick`/`report`/`release`: counters, scores, breaker state) and the active
health checker (`healthy`). Algorithms only read it. Everything runs on one event loop,
so plain attributes are enough (no locks).

`Balancer.pick()` and `Balancer.report()` are the same for every algorithm: `pick`
filters with `eligible()`, lets the algorithm `choose()`, lets the breaker claim a
half-open trial and counts the pick in flight; `report` ends it with the attempt's
outcome (request and failure counters, latency, usage, breaker), `release` ends a pick
that was never sent. Algorithms only implement `choose()`.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import scores
from .breaker import Breaker
from .capacity import has_slot
from .options import BalancerOptions
from .outcome import Outcome

Clock = Callable[[], float]


@dataclass(slots=True, eq=False)
class TargetState:
    index: int  # position in the route's target list
    name: str
    weight: int
    in_flight: int = 0  # picks not yet reported or released (streams: until the end)
    requests: int = 0  # attempts sent to this target (reported picks)
    failures: int = 0  # reported attempts that were target failures (Outcome.counts)
    healthy: bool = True  # written only by active health checks (a target starts healthy)
    # Latency EWMA (seconds, or seconds per completion token under `tpot`). `samples`
    # counts successful samples; ewma == inf with samples == 0 means "failed before any
    # sample" (explored, but nothing fast is known about it).
    ewma: float = 0.0
    ewma_at: float = 0.0  # clock() of the last sample (for the adaptive alpha)
    samples: int = 0
    # Usage per tokens_count_strategy, as of `usage_at` (decays with a 60 s half-life).
    usage: float = 0.0
    usage_at: float = 0.0
    # Passive circuit breaker. `breaker` is the stored state: closed | open | half_open
    # ("half_open" = a trial request is in flight); use `breaker_state(now)` for display.
    breaker: str = "closed"
    fail_times: deque[float] = field(default_factory=deque)  # counted failures in window
    open_until: float = 0.0  # skipped while clock() < open_until (Retry-After source)
    opens: int = 0  # times the circuit opened (a counter: short open periods between scrapes)
    trial_until: float = 0.0  # half-open trial claimed: skipped while clock() < trial_until
    last_change: float = field(default_factory=time.time)  # wall time of last health change
    # Capacity: how many requests the server generates at once (None = unlimited). Set
    # from config (`max_concurrency`) or, for `auto`, by discovery from the server.
    capacity: int | None = None
    # Load signals written by discovery: what the server itself reports, including
    # requests other clients sent it. None = not known (no signal, or too old).
    busy_reported: int | None = None  # busy slots / requests processing
    own_at_signal: int = 0  # our own requests on that server when busy_reported was read
    deferred_reported: int | None = None  # waiting inside the server (llama.cpp deferred)
    signals_at: float = 0.0  # clock() when the signals above were read
    # Models written by discovery (None = not discovered: any model may be there).
    models_installed: frozenset[str] | None = None
    models_loaded: frozenset[str] | None = None

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.open_until and now >= self.trial_until

    def breaker_state(self, now: float) -> str:
        """closed | open | half_open, as an operator would name it right now."""
        if self.breaker == "closed":
            return "closed"
        return "open" if now < self.open_until else "half_open"


@dataclass(slots=True)
class PickContext:
    """What a balancer may know about the request it picks for."""

    tried: list[TargetState] = field(default_factory=list)  # in attempt order
    hash_key: str | None = None  # consistent-hashing key (header value), if any
    # Targets to use when one of them can be picked (e.g. the model is already loaded
    # there); the others only when none of these can.
    preferred: list[TargetState] = field(default_factory=list)


def rotation_start(eligible: Sequence[TargetState], last: int) -> int:
    """Position in `eligible` (config order) of the first target after index `last`, wrapping.

    Scanning from there and keeping the first strict minimum breaks ties round-robin.
    """
    for pos, s in enumerate(eligible):
        if s.index > last:
            return pos
    return 0


class Balancer(ABC):
    """Chooses one target among `candidates` for one attempt of one request.

    `candidates` is the subset allowed by the request (model rules) in config order;
    the balancer skips unavailable targets and, while an untried one exists, tried ones.
    Returning None means: no target can be tried now.

    Every pick must be followed by exactly one `report()` (the attempt ran) or one
    `release()` (it did not, or ended without an outcome), so that a half-open breaker
    trial is never held forever (`options.trial_timeout` is only a safety net).
    """

    def __init__(
        self,
        states: Sequence[TargetState],
        clock: Clock = time.monotonic,
        options: BalancerOptions = BalancerOptions(),  # noqa: B008 (frozen, shared)
        rng: random.Random | None = None,
        wall: Clock = time.time,
    ) -> None:
        self.states = list(states)
        self.clock = clock
        self.options = options
        self.rng = rng if rng is not None else random.Random()
        self.breaker = Breaker(options, wall)
        # Any target with a capacity (set once from config, or later by discovery for
        # `auto`): only then does eligible() pay for the capacity check.
        self.limited = any(s.capacity is not None for s in self.states)
        # Called after a report or release frees a slot (the admission queue listens).
        self.on_free: Callable[[TargetState], None] | None = None

    def eligible(self, candidates: Sequence[TargetState], ctx: PickContext) -> list[TargetState]:
        now = self.clock()
        # `TargetState.available`, inlined: this runs for every candidate of every attempt.
        avail = [
            s for s in candidates if s.healthy and now >= s.open_until and now >= s.trial_until
        ]
        if ctx.tried:
            fresh = [s for s in avail if s not in ctx.tried]
            if fresh:
                avail = fresh
        if self.limited:
            # After the choice of untried targets: a retry waits for an untried target
            # that is only full rather than going back to one that just failed.
            max_age = self.options.signal_max_age
            avail = [s for s in avail if has_slot(s, now, max_age)]
        if ctx.preferred:
            preferred = [s for s in avail if s in ctx.preferred]
            if preferred:
                return preferred
        return avail

    def pick(self, candidates: Sequence[TargetState], ctx: PickContext) -> TargetState | None:
        eligible = self.eligible(candidates, ctx)
        if not eligible:
            return None
        state = eligible[0] if len(eligible) == 1 else self.choose(eligible, ctx)
        if state.breaker != "closed":
            self.breaker.claim(state, self.clock())
        state.in_flight += 1
        return state

    @abstractmethod
    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        """One of `eligible` (at least two targets, all available, in config order)."""

    # Which scores this algorithm ranks by; the others are not kept up to date, since
    # report() runs for every attempt and nothing else reads them.
    uses_latency = False
    uses_usage = False

    def report(self, state: TargetState, outcome: Outcome) -> None:
        """End a pick whose attempt was sent: count it, learn from it (the breaker
        always, latency/usage when ranked by). An outcome without a verdict (ok=False,
        no failure: the client left) still adds the tokens served to the usage, but
        teaches nothing else and hands back a breaker trial."""
        state.in_flight -= 1
        state.requests += 1
        self._learn(state, outcome)
        if self.on_free is not None:
            self.on_free(state)

    def _learn(self, state: TargetState, outcome: Outcome) -> None:
        now = self.clock()
        opts = self.options
        if self.uses_usage:  # tokens served count whatever the verdict
            scores.add_usage(state, outcome, opts.tokens_count_strategy, now)
        if not outcome.ok and outcome.failure is None:
            self.breaker.release(state)
            return
        failed = outcome.counts
        if failed:
            state.failures += 1
        if self.uses_latency:
            if outcome.ok:
                scores.add_latency(state, outcome, opts.latency_strategy, now)
            elif failed:
                scores.penalize_latency(state)
        self.breaker.record(state, failed, now)

    def score(self, state: TargetState, now: float) -> float | None:
        """The number this algorithm ranks targets by, for /status and metrics; None
        for algorithms that keep no score (round-robin, hashing, priority, …)."""
        return None

    def release(self, state: TargetState) -> None:
        """End a pick that was never sent (its dialect could not carry the request):
        nothing counted, its half-open trial handed back, if any."""
        state.in_flight -= 1
        self.breaker.release(state)
        if self.on_free is not None:
            self.on_free(state)
