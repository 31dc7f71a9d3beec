"""Discovery: what each upstream server says about itself, read on a timer and written to
the `TargetState`s of the targets on it (the only writer of `models_installed`,
`models_loaded`, `busy_reported`, `deferred_reported`, `signals_at`, and of
`capacity` for targets configured `max_concurrency: auto`).

One poller per distinct server (origin and credentials, `ProbeSpec` equality, as the
health checker shares probers), whatever number of targets and routes point at it.
What a poll reads depends on the kinds of target on the server:

- ollama: `GET /api/tags` (installed models) and `GET /api/ps` (loaded ones);
- openai: `GET /v1/models` (installed; loaded unknown). A single-model llama-server
  found there (one entry `owned_by: llamacpp`) answers to any model name, so its models
  stay unknown and its load is read as below;
- llamacpp (raw, native flavour): `GET /props` (slot count; asleep or not), then unless
  asleep `GET /slots` (busy slots, slot count) and `GET /metrics` (requests deferred,
  and requests processing when /slots is off), each only while the server serves it.
  Native-endpoint targets name no model, so their models are never written.
- TGI (raw, hf flavour): nothing is read; its targets are not polled.

Side effects on llama-server, which the reads are shaped around:
- asleep (`--sleep-idle-seconds`), a server runs and queues nothing: busy and deferred
  are 0, and /slots is not asked, since that GET queues a task on the server and would
  wake it (load the model again); /props answers without waking it;
- awake, each /slots or /metrics GET queues a task, which restarts the server's idle
  timer: a server discovery polls more often than its sleep delay never falls asleep;
- each /metrics GET restarts the window llama-server averages its throughput gauges
  (`prompt_tokens_seconds`, `predicted_tokens_seconds`) over, which an operator's own
  Prometheus scrape of that server then sees shortened. `read_deferred=False` asks
  /metrics only when /slots is off (busy has no other source), at the cost of the
  deferred count.

An endpoint answered with 404, 405 or 501 (llama-server's "start it with --metrics"),
or that /props says is off, is not asked again for `off_retry` seconds.

Failures: a value that cannot be read keeps its last reading for up to `max_age`
(3 × the interval), then becomes None (unknown). Each such change is logged once, at
WARNING (failing, expired) or INFO (answering again, endpoint off); each poll only at
DEBUG. A slot count learnt for `max_concurrency: auto` is kept while the server is away:
it is the server's launch configuration, not a load reading, and unknown would mean
unlimited.

Requests go through a `gateway.http1.Pool` of discovery's own, each on a new connection
with `Connection: close`: an interval of 5 s is as long as the idle timeout of common
servers (cpp-httplib, uvicorn), so a kept connection would mostly be found closed at
the next poll, and while open would hold one of llama-server's HTTP threads. Credentials
are sent as the health check sends them; their values appear in no log or snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from balancers import TargetState

from ..config.schema import ActiveHealthcheck, TargetConfig
from ..failure import classify
from ..health import ProbeSpec, probe_spec, public_url
from ..http1 import Pool, Timeouts, UpstreamError
from . import events, parse
from .server import Kind, Member, Server, ServerSnapshot
from .signals import display_names

if TYPE_CHECKING:  # routing will call into `signals`: no import of it at run time
    from ..routing import Route

log = logging.getLogger("llama_gateway.discovery")
T = TypeVar("T")

# Seconds between two polls of one server; routing.DISCOVERY_INTERVAL, from which the
# balancers' signal age limit is derived, must say the same.
INTERVAL = 5.0
STALE_AFTER = 3  # intervals after which an unread value is unknown
TIMEOUT = 2.0  # per request: connect, write, silence, and the whole exchange
MAX_BODY = 1 << 20  # a /props with a long chat template is tens of KiB
OFF_RETRY = 300.0  # seconds before asking again an endpoint the server does not serve
OFF_STATUSES = frozenset({404, 405, 501})
INTERNAL = "internal"


# Origin and credentials only: the path is each GET's own.
_ORIGIN_ONLY = ActiveHealthcheck(http_path="/")


def kind_of(t: TargetConfig) -> Kind | None:
    """What discovery reads for a target; None: nothing (TGI)."""
    o = t.options
    if o.llama2_format == "ollama":
        return "ollama"
    if o.llama2_format == "openai":
        return "openai"
    if o.raw_flavor == "llamacpp":
        return "llamacpp"
    return None


def server_spec(t: TargetConfig) -> ProbeSpec:
    """The server a target is on: its origin and the credentials the health check
    sends (header, or query parameter), so both authenticate alike."""
    return probe_spec(t, _ORIGIN_ONLY)


class _Status(Exception):
    """The server answered a status other than 200 (`off`: it does not serve the
    endpoint, see OFF_STATUSES)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
        self.off = status in OFF_STATUSES


class Discovery:
    """Polls each distinct server once per `interval` and writes what it says to the
    `TargetState`s on it (see the module doc).

    `clock` must be the clock the balancers and the capacity check read (`signals_at`
    is on it); `wall` dates the snapshot. Owns its connection pool (made at start(), or
    at the first poll(), closed at stop())."""

    def __init__(
        self,
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        pool_factory: Callable[[], Pool] = Pool,
        off_retry: float = OFF_RETRY,
        max_body: int = MAX_BODY,
        read_deferred: bool = True,
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError("interval and timeout must be > 0")
        self.interval = interval
        self.timeout = timeout
        self.max_age = STALE_AFTER * interval
        self.off_retry = off_retry
        self.max_body = max_body
        self.read_deferred = read_deferred
        self._clock = clock
        self._wall = wall
        self._pool_factory = pool_factory
        self._pool: Pool | None = None
        self._servers: dict[ProbeSpec, Server] = {}
        self._by_state: dict[TargetState, Server] = {}  # TargetState hashes by identity

    def __repr__(self) -> str:
        return f"<Discovery servers={len(self._servers)} running={self._running}>"

    @property
    def _running(self) -> bool:
        return any(s.task is not None for s in self._servers.values())

    def add(
        self, spec: ProbeSpec, kind: Kind, state: TargetState, auto_capacity: bool = False
    ) -> None:
        if self._running:
            raise RuntimeError("Discovery.add() must be called before start()")
        if state in self._by_state:
            return
        srv = self._servers.get(spec)
        if srv is None:
            srv = self._servers[spec] = Server(spec)  # a bad URL fails here, not in a task
        srv.kinds.add(kind)
        srv.members.append(Member(state, kind, auto_capacity))
        self._by_state[state] = srv

    async def start(self) -> None:
        """One polling task per server; each polls at once, then every `interval`."""
        if self._running:
            return
        self._open()
        for srv in self._servers.values():
            name = f"discovery {public_url(srv.spec.url)}"
            srv.task = asyncio.create_task(self._run(srv), name=name)

    async def stop(self) -> None:
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in self._servers.values():
            s.task = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def poll(self) -> None:
        """Poll every server once now (tests; an operator's refresh)."""
        self._open()
        await asyncio.gather(*(self._poll_safely(s) for s in self._servers.values()))

    def snapshot(self) -> list[ServerSnapshot]:
        """One entry per server, for /status and tests."""
        return [self._snapshot(s) for s in self._servers.values()]

    def server_of(self, state: TargetState) -> ServerSnapshot | None:
        """The server `state` is polled as part of, or None when it is not polled."""
        srv = self._by_state.get(state)
        return self._snapshot(srv) if srv is not None else None

    # ------------------------------------------------------------------ polling

    def _open(self) -> None:
        if self._pool is None:
            self._pool = self._pool_factory()

    async def _run(self, srv: Server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._poll_safely(srv)
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    async def _poll_safely(self, srv: Server) -> None:
        try:
            await self._poll(srv)
        except Exception:
            # Our bug, not the server's: keep polling, say it once.
            srv.last_error = INTERNAL
            if not srv.warned:
                srv.warned = True
                events.internal_error(srv)

    async def _poll(self, srv: Server) -> None:
        errors: list[str] = []
        if "ollama" in srv.kinds:
            await self._read_ollama(srv, errors)
        elif "openai" in srv.kinds:
            await self._read_openai(srv, errors)
        if srv.reads_load:
            await self._read_llamacpp(srv, errors)
        now = self._clock()
        srv.polls += 1
        srv.last_poll = self._wall()
        self._settle(srv, "; ".join(errors) or None)
        expired = srv.expire(now - self.max_age)
        if expired:
            events.expired(srv, expired, self.max_age)
        srv.write()
        values = (srv.busy.value, srv.deferred.value, srv.slots, srv.last_error)
        log.debug("discovery: polled %s: busy=%s deferred=%s slots=%s error=%s", srv.where, *values)

    async def _read_ollama(self, srv: Server, errors: list[str]) -> None:
        tags = await self._get(srv, "/api/tags", parse.ollama_models, errors)
        if tags is not None:
            srv.installed.set(tags, self._read_at(srv))
        ps = await self._get(srv, "/api/ps", parse.ollama_models, errors)
        if ps is not None:
            srv.loaded.set(ps, self._read_at(srv))

    async def _read_openai(self, srv: Server, errors: list[str]) -> None:
        models = await self._get(srv, "/v1/models", parse.openai_models, errors)
        if models is None:
            return
        now = self._read_at(srv)
        srv.llama_server = models.llama_server
        # A single-model llama-server answers to any name: its one id filters nothing.
        srv.installed.set(None if models.llama_server else models.ids, now)
        srv.loaded.set(models.loaded, now)

    async def _read_llamacpp(self, srv: Server, errors: list[str]) -> None:
        failed = len(errors)
        props = await self._get(srv, "/props", parse.llamacpp_props, errors)
        if len(errors) > failed:
            # Whether it sleeps is unknown, and a GET /slots would wake it.
            return
        if props is not None:
            srv.sleeping = props.sleeping
            if props.total_slots is not None:
                srv.slots = props.total_slots
            if props.sleeping:
                now = self._read_at(srv)
                srv.own_at_busy = sum(m.state.in_flight for m in srv.members)
                srv.busy.set(0, now)
                srv.deferred.set(0, now)
                return
            self._follow(srv, "/slots", props.slots_endpoint)
            self._follow(srv, "/metrics", props.metrics_endpoint)
        slots = await self._get(srv, "/slots", parse.llamacpp_slots, errors)
        if slots is not None:
            srv.own_at_busy = sum(m.state.in_flight for m in srv.members)
            srv.busy.set(slots.busy, self._read_at(srv))
            srv.slots = slots.total
        if slots is not None and not self.read_deferred:
            return
        metrics = await self._get(srv, "/metrics", parse.llamacpp_metrics, errors)
        if metrics is not None:
            now = self._read_at(srv)
            if slots is None and metrics.processing is not None:
                srv.own_at_busy = sum(m.state.in_flight for m in srv.members)
                srv.busy.set(metrics.processing, now)
            if metrics.deferred is not None:
                srv.deferred.set(metrics.deferred, now)

    def _follow(self, srv: Server, path: str, on: bool | None) -> None:
        """What /props says of an endpoint, when it says something."""
        if on is False:
            self._turn_off(srv, path, "/props says it is off")
        elif on is True and srv.off_until.pop(path, None) is not None:
            events.endpoint_on(srv, path)

    def _read_at(self, srv: Server) -> float:
        srv.last_read = self._wall()
        return self._clock()

    async def _get(
        self, srv: Server, path: str, parser: Callable[[bytes], T], errors: list[str]
    ) -> T | None:
        """`GET path` parsed, or None: off (not asked), or failed (the reason appended
        to `errors`: no URL, no credential, no body)."""
        if self._clock() < srv.off_until.get(path, -math.inf):
            return None
        try:
            body = await self._fetch(srv, path)
        except _Status as exc:
            if exc.off:
                self._turn_off(srv, path, f"HTTP {exc.status}")
            else:
                errors.append(f"{path}: HTTP {exc.status}")
            return None
        except TimeoutError:
            errors.append(f"{path}: timeout")
            return None
        except UpstreamError as exc:
            errors.append(f"{path}: {classify(exc).detail}")
            return None
        if srv.off_until.pop(path, None) is not None:
            events.endpoint_on(srv, path)
        try:
            return parser(body)
        except ValueError:  # orjson's decode error is one; its text is not logged
            errors.append(f"{path}: malformed answer")
            return None

    async def _fetch(self, srv: Server, path: str) -> bytes:
        pool = self._pool
        assert pool is not None  # set by start() or poll() before any request
        t = self.timeout
        limits = Timeouts(connect=t, read=t, write=t)
        # The client's read timeout restarts with every byte: the overall bound stops a
        # server trickling its answer from holding the poll.
        async with asyncio.timeout(t):
            resp = await pool.request(srv.origin, srv.request(path), limits, fresh=True)
            try:
                if resp.status != 200:
                    raise _Status(resp.status)
                return await resp.read(self.max_body)
            finally:
                resp.close()

    def _turn_off(self, srv: Server, path: str, why: str) -> None:
        now = self._clock()
        if srv.off_until.get(path, -math.inf) == -math.inf:  # once per change
            events.endpoint_off(srv, path, why, self.off_retry)
        srv.off_until[path] = now + self.off_retry

    def _settle(self, srv: Server, error: str | None) -> None:
        """Record the poll's error; log when the server starts or stops failing."""
        before, srv.last_error = srv.last_error, error
        if error is not None and before is None:
            events.failing(srv, error, self.max_age)
        elif error is None and before is not None:
            events.recovered(srv)

    def _snapshot(self, srv: Server) -> ServerSnapshot:
        now = self._clock()
        installed, loaded = srv.installed.value, srv.loaded.value
        return {
            "url": public_url(srv.spec.url),
            "kinds": sorted(srv.kinds),
            "llama_server": srv.reads_load,
            "targets": [m.state.name for m in srv.members],
            "polling": srv.task is not None and not srv.task.done(),
            "interval": self.interval,
            "polls": srv.polls,
            "last_poll": srv.last_poll,
            "last_read": srv.last_read,
            "last_error": srv.last_error,
            "models_installed": display_names(installed) if installed is not None else None,
            "models_loaded": display_names(loaded) if loaded is not None else None,
            "busy": srv.busy.value,
            "deferred": srv.deferred.value,
            "slots": srv.slots,
            "sleeping": srv.sleeping,
            "off": sorted(p for p, until in srv.off_until.items() if until > now),
        }


def build_discovery(
    routes: Sequence[Route],
    *,
    interval: float = INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> Discovery | None:
    """One discovery for every target it can read something from; None when none can.
    Targets configured `max_concurrency: auto` get the server's slot count as capacity.
    Discovery goes with active health checks: a route that turned them off
    (`healthchecks.active: null`) sends no background requests at all."""
    d = Discovery(interval=interval, clock=clock)
    n = 0
    for route in routes:
        if route.cfg.balancer.healthchecks is None:
            continue
        for t in route.targets:
            kind = kind_of(t.cfg)
            if kind is None:
                continue
            d.add(server_spec(t.cfg), kind, t.state, t.cfg.auto_concurrency)
            n += 1
    return d if n else None
