"""Active health checks (SPEC §6.4): a cheap GET per target server, Kong's counting rules.

Semantics follow Kong's upstream healthchecks (lua-resty-healthcheck):
- a target starts healthy (the prober adopts its states' current `healthy` at start, so
  states carried over with healthy=False are not stuck behind a "healthy" prober);
- a probe is a success (status in `healthy_statuses`), an http failure (any other status,
  e.g. llama.cpp's 503 "Loading model"), a tcp failure (refused, reset, malformed
  response) or a timeout;
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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from .base import TargetState

log = logging.getLogger("llama_gateway.health")

SessionFactory = Callable[[], aiohttp.ClientSession]


def public_url(url: str) -> str:
    """`url` without userinfo or fragment and with query values masked (display only)."""
    try:
        u = URL(url).with_user(None).with_fragment(None)
        if u.query:
            u = u.with_query({k: "***" for k in u.query})
        return str(u)
    except (ValueError, TypeError):
        return "<invalid url>"


def _host_port(url: str) -> str:
    u = URL(url)
    host = u.raw_host or "?"
    return f"[{host}]:{u.port}" if ":" in host else f"{host}:{u.port}"


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe. Header names are lower-cased and pairs sorted, so specs that send
    the same headers compare (and share a prober) equal whatever order they were given."""

    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        norm = tuple(sorted((k.lower(), v) for k, v in self.headers))
        object.__setattr__(self, "headers", norm)

    def __repr__(self) -> str:
        names = ",".join(k for k, _ in self.headers)
        return f"ProbeSpec(url={public_url(self.url)!r}, headers=[{names}])"


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


class _Prober:
    """One spec's verdict and counters; the states it writes; its task."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.where = _host_port(spec.url)
        self.policies: list[HealthPolicy] = []
        self.states: list[TargetState] = []
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
        for s in self.states:
            if s.healthy != self.healthy:
                s.healthy = self.healthy
                s.last_change = now
        # Once per change, never per probe: WARNING going down, INFO coming back.
        level, verdict = (logging.INFO, "healthy") if success else (logging.WARNING, "unhealthy")
        what = counter.replace("_", " ")
        names = ", ".join(s.name for s in self.states)
        log.log(level, "health: %s marked %s after %d %s in a row (targets: %s)",
                self.where, verdict, n, what, names)  # fmt: skip


class HealthChecker:
    """Runs one probing task per distinct `ProbeSpec` and writes `TargetState.healthy`."""

    def __init__(
        self,
        session_factory: SessionFactory | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session_factory = session_factory or _default_session
        self._clock = clock  # wall time, for last_change / last_probe
        self._probers: dict[ProbeSpec, _Prober] = {}
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<HealthChecker probers={len(self._probers)} running={self._session is not None}>"

    def add(self, spec: ProbeSpec, policy: HealthPolicy, state: TargetState) -> None:
        if self._session is not None:
            raise RuntimeError("HealthChecker.add() must be called before start()")
        prober = self._probers.get(spec)
        if prober is None:
            prober = self._probers[spec] = _Prober(spec)
        prober.policies.append(policy)
        if not any(s is state for s in prober.states):
            prober.states.append(state)

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = self._session_factory()
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
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def snapshot(self) -> list[dict]:
        """One dict per prober, for /status and metrics. Never contains header values."""
        out = []
        for pr in self._probers.values():
            running = pr.task is not None and not pr.task.done()
            out.append(
                {
                    "url": public_url(pr.spec.url),
                    "targets": [s.name for s in pr.states],
                    "healthy": pr.healthy,
                    "probing": running,
                    "interval": pr.interval(),
                    **pr.counts,
                    "probes": pr.probes,
                    "last_probe": pr.last_probe,
                    "last_status": pr.last_status,
                    # None | status | connect | reset | invalid | timeout | internal
                    "last_error": pr.last_error,
                    "last_change": pr.last_change,
                }
            )
        return out

    async def _run(self, prober: _Prober) -> None:
        loop = asyncio.get_running_loop()
        while prober.interval() > 0:
            started = loop.time()
            try:
                await self._probe(prober)
            except Exception:
                # Our bug, not the target's: count nothing, keep probing, say it once.
                prober.last_error = "internal"
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
        session = self._session
        assert session is not None  # set by start() before any task exists
        spec, policy = prober.spec, prober.policy
        status: int | None = None
        try:
            async with session.get(
                spec.url,
                headers=spec.headers,
                allow_redirects=False,  # a redirect is an answer, not a hop to follow
                timeout=aiohttp.ClientTimeout(total=policy.timeout),
            ) as resp:
                status = resp.status
        except TimeoutError:  # includes aiohttp's connect/read timeout errors
            counter, error = "timeouts", "timeout"
        except aiohttp.ClientConnectorError:
            counter, error = "tcp_failures", "connect"
        except aiohttp.ClientResponseError:  # malformed status line or headers
            counter, error = "tcp_failures", "invalid"
        except (aiohttp.ClientError, OSError):
            counter, error = "tcp_failures", "reset"
        else:
            ok = status in policy.healthy_statuses
            counter, error = ("successes", None) if ok else ("http_failures", "status")
        now = self._clock()
        prober.probes += 1
        prober.last_probe, prober.last_status, prober.last_error = now, status, error
        # Per probe: DEBUG only, and only the kind (exception texts may carry the URL).
        log.debug("health: probe %s -> %s", prober.where, error or status)
        prober.record(counter, now)


def _default_session() -> aiohttp.ClientSession:
    # force_close: every probe opens a fresh connection, so it tests that the server
    # still accepts connections rather than reusing a pooled socket.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,  # like the proxy's session: no env proxies for upstream traffic
        headers={"User-Agent": "llama-gateway-healthcheck"},
    )
    # aiohttp silently resends an idempotent request once when the connection drops;
    # one probe must be one attempt, or a reset would never count (aiohttp's own
    # test client switches it off the same way; no public knob exists).
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session
