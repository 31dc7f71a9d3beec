"""Active health checks: a cheap GET per target server on a timer, Kong's counting rules,
the verdict written to `TargetState.healthy` (the only writer of that field).

Semantics follow Kong's upstream healthchecks (lua-resty-healthcheck):
- a target starts healthy (the prober adopts its states' current `healthy` at start, so
  states carried over with healthy=False are not stuck behind a "healthy" prober);
- a probe is a success (status in `healthy_statuses`), an http failure (any other status,
  e.g. llama.cpp's 503 "Loading model"; a redirect too), a tcp failure (`Reason`
  connect, reset or invalid: refused, dropped, not HTTP) or a timeout (`Reason.TIMEOUT`:
  connect, write, read or the whole probe past `timeout`);
- counters count "in a row without the opposite outcome": a success clears every failure
  counter, any failure clears the success counter; failure kinds do not clear each other.
  Reaching a non-zero threshold flips the verdict and clears every counter; 0 never trips;
- `interval: 0` disables that direction: no probes while in it (the prober idles for good,
  as nothing but the prober changes `healthy`).
The first probe runs at start(); later ones start `interval` seconds after the previous
one started, so detection takes about (threshold - 1) × interval (+ timeouts).

Equal `ProbeSpec`s share one prober and one verdict. Their policies merge into one that
is order-independent: shortest timeout, shortest non-zero interval and smallest non-zero
threshold per field (0 only when every sharer says 0), union of healthy statuses.

Header values are secrets (the target's auth): they appear in no repr, log or snapshot.
Probes go through a `gateway.http1.Pool` of the checker's own, so they neither borrow
nor count as the proxy's upstream connections (see `probe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypedDict

from balancers import Reason, TargetState

from ..http1 import Pool
from ..logs import event
from .probe import ProbeRequest, ProbeSpec, probe, public_url

log = logging.getLogger("llama_gateway.health")

INTERNAL = "internal"  # last_error when the prober itself failed (a bug, not the target)


@dataclass(frozen=True)
class HealthPolicy:
    """Kong's active healthcheck shape (seconds and counts)."""

    timeout: float = 1.0
    healthy_interval: float = 5.0
    healthy_successes: int = 2
    healthy_statuses: frozenset[int] = frozenset({200})
    unhealthy_interval: float = 5.0
    unhealthy_http_failures: int = 2
    unhealthy_tcp_failures: int = 2
    unhealthy_timeouts: int = 2

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0")
        if self.healthy_interval < 0 or self.unhealthy_interval < 0:
            raise ValueError("intervals must be >= 0 (0 disables that direction)")
        counts = (self.healthy_successes, self.unhealthy_http_failures)
        if min(*counts, self.unhealthy_tcp_failures, self.unhealthy_timeouts) < 0:
            raise ValueError("thresholds must be >= 0 (0 never trips)")

    @staticmethod
    def merge(policies: Iterable[HealthPolicy]) -> HealthPolicy:
        """One policy for a shared prober: react as fast as the most eager sharer."""
        ps = list(policies)

        def eager(values: Iterable[float]) -> float:
            nonzero = [v for v in values if v > 0]
            return min(nonzero) if nonzero else 0

        return HealthPolicy(
            timeout=min(p.timeout for p in ps),
            healthy_interval=eager(p.healthy_interval for p in ps),
            healthy_successes=int(eager(p.healthy_successes for p in ps)),
            healthy_statuses=frozenset().union(*(p.healthy_statuses for p in ps)),
            unhealthy_interval=eager(p.unhealthy_interval for p in ps),
            unhealthy_http_failures=int(eager(p.unhealthy_http_failures for p in ps)),
            unhealthy_tcp_failures=int(eager(p.unhealthy_tcp_failures for p in ps)),
            unhealthy_timeouts=int(eager(p.unhealthy_timeouts for p in ps)),
        )


# counter -> the HealthPolicy field that is its threshold
_LIMITS = {
    "successes": "healthy_successes",
    "http_failures": "unhealthy_http_failures",
    "tcp_failures": "unhealthy_tcp_failures",
    "timeouts": "unhealthy_timeouts",
}


class ProberSnapshot(TypedDict):
    """One prober as /status and tests see it. Never a header value."""

    url: str  # public form: no userinfo, query values masked
    targets: list[str]
    healthy: bool
    probing: bool
    interval: float
    successes: int
    http_failures: int
    tcp_failures: int
    timeouts: int
    probes: int
    last_probe: float | None  # wall time
    last_status: int | None
    last_error: str | None  # None | a `Reason` value | "internal"
    last_change: float | None  # wall time


class _Prober:
    """One spec's verdict and counters; the states it writes; its task."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.request = ProbeRequest(spec)  # a bad URL fails at add(), not in the task
        origin = self.request.origin
        self.where = f"{origin.bracketed_host}:{origin.port}"  # for logs: never the query
        self.policies: list[HealthPolicy] = []
        self.states: list[TargetState] = []
        self.routes: dict[TargetState, str] = {}  # route name of each state (for events)
        self.policy = HealthPolicy()
        self.healthy = True
        self.counts = {"successes": 0, "http_failures": 0, "tcp_failures": 0, "timeouts": 0}
        self.probes = 0
        self.last_probe: float | None = None
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.last_change: float | None = None
        self.warned = False  # an unexpected exception was logged once already
        self.task: asyncio.Task[None] | None = None

    def interval(self) -> float:
        p = self.policy
        return p.healthy_interval if self.healthy else p.unhealthy_interval

    def record(self, counter: str, now: float) -> None:
        """Count one probe outcome (`successes` or a failure counter); flip if due."""
        success = counter == "successes"
        for name in self.counts:
            if (name == "successes") != success:  # the opposite outcome's counters
                self.counts[name] = 0
        self.counts[counter] += 1
        n, limit = self.counts[counter], getattr(self.policy, _LIMITS[counter])
        # Only the opposite outcome can flip: successes while healthy just keep it so.
        if limit == 0 or n < limit or self.healthy == success:
            return
        self.healthy = not self.healthy
        self.last_change = now
        for name in self.counts:
            self.counts[name] = 0
        # Once per change, never per probe: WARNING going down, INFO coming back.
        level, verdict = (logging.INFO, "healthy") if success else (logging.WARNING, "unhealthy")
        before = "unhealthy" if success else "healthy"
        reason = f"{n} {counter.replace('_', ' ')} in a row"
        for s in self.states:
            if s.healthy == self.healthy:
                continue
            s.healthy = self.healthy
            s.last_change = now
            route = self.routes.get(s, "")
            # `upstream` is host:port only: the probe URL's query may carry a key.
            event(log, "target.health_changed",
                  f"health: {self.where} marked {verdict} after {reason} (target {s.name}, "
                  f"route {route})",
                  level=level, route=route, target=s.name, from_=before, to=verdict,
                  reason=reason, upstream=self.where, last_status=self.last_status,
                  last_error=self.last_error)  # fmt: skip

    def snapshot(self) -> ProberSnapshot:
        c = self.counts
        return {
            "url": public_url(self.spec.url),
            "targets": [s.name for s in self.states],
            "healthy": self.healthy,
            "probing": self.task is not None and not self.task.done(),
            "interval": self.interval(),
            "successes": c["successes"],
            "http_failures": c["http_failures"],
            "tcp_failures": c["tcp_failures"],
            "timeouts": c["timeouts"],
            "probes": self.probes,
            "last_probe": self.last_probe,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_change": self.last_change,
        }


class HealthChecker:
    """Runs one probing task per distinct `ProbeSpec` and writes `TargetState.healthy`.

    Owns its connection pool (made by `pool_factory` at start(), closed at stop()), so
    probe connections stay out of the proxy pool and its connection metrics."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        pool_factory: Callable[[], Pool] = Pool,
    ) -> None:
        self._clock = clock  # wall time, for last_change / last_probe
        self._pool_factory = pool_factory
        self._probers: dict[ProbeSpec, _Prober] = {}
        self._by_state: dict[TargetState, _Prober] = {}  # TargetState hashes by identity
        self._pool: Pool | None = None

    def __repr__(self) -> str:
        return f"<HealthChecker probers={len(self._probers)} running={self._pool is not None}>"

    def add(
        self, spec: ProbeSpec, policy: HealthPolicy, state: TargetState, route: str = ""
    ) -> None:
        """Probe `state`'s server by `spec` under `policy`; `route` names it in events."""
        if self._pool is not None:
            raise RuntimeError("HealthChecker.add() must be called before start()")
        prober = self._probers.get(spec)
        if prober is None:
            prober = self._probers[spec] = _Prober(spec)
        prober.policies.append(policy)
        if not any(s is state for s in prober.states):
            prober.states.append(state)
            prober.routes[state] = route
        self._by_state.setdefault(state, prober)

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = self._pool_factory()
        for prober in self._probers.values():
            prober.policy = HealthPolicy.merge(prober.policies)
            prober.healthy = all(s.healthy for s in prober.states)
            prober.counts = dict.fromkeys(prober.counts, 0)  # a restart counts afresh
            p = prober.policy
            if p.healthy_interval == 0 and p.unhealthy_interval == 0:
                continue  # both directions disabled: nothing to do, ever
            name = f"health-probe {public_url(prober.spec.url)}"
            prober.task = asyncio.create_task(self._run(prober), name=name)

    async def stop(self) -> None:
        tasks = [p.task for p in self._probers.values() if p.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in self._probers.values():
            p.task = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def snapshot(self) -> list[ProberSnapshot]:
        """One entry per prober, for /status and tests."""
        return [pr.snapshot() for pr in self._probers.values()]

    def prober_of(self, state: TargetState) -> ProberSnapshot | None:
        """The prober writing `state`, or None when no health check covers it."""
        prober = self._by_state.get(state)
        return prober.snapshot() if prober is not None else None

    async def _run(self, prober: _Prober) -> None:
        loop = asyncio.get_running_loop()
        while prober.interval() > 0:
            started = loop.time()
            try:
                await self._probe(prober)
            except Exception:
                # Our bug, not the target's: count nothing, keep probing, say it once.
                prober.last_error = INTERNAL
                if not prober.warned:
                    prober.warned = True
                    log.warning(
                        "health: probe of %s failed unexpectedly", prober.where, exc_info=True
                    )
            # The verdict may have just flipped: the cadence of the new direction applies
            # at once (and 0 ends the loop: that direction is not probed).
            if (interval := prober.interval()) > 0:
                await asyncio.sleep(max(0.0, started + interval - loop.time()))

    async def _probe(self, prober: _Prober) -> None:
        pool = self._pool
        assert pool is not None  # set by start() before any task exists
        policy = prober.policy
        result = await probe(pool, prober.request, policy.timeout)
        failure = result.failure
        if failure is None:
            ok = result.status in policy.healthy_statuses
            counter, failure = ("successes", None) if ok else ("http_failures", Reason.STATUS)
        elif failure is Reason.TIMEOUT:
            counter = "timeouts"
        else:  # connect, reset, invalid: the server did not give a readable answer
            counter = "tcp_failures"
        error = None if failure is None else failure.value
        now = self._clock()
        prober.probes += 1
        prober.last_probe, prober.last_status, prober.last_error = now, result.status, error
        # Per probe: DEBUG only, and only the kind (never a URL: it may carry a key).
        log.debug("health: probe %s -> %s", prober.where, error or result.status)
        prober.record(counter, now)
