"""Prometheus metrics: Kong-compatible series and our own.

Cheap on the hot path: every label value comes from config, so all label children are
created once at startup and a finished request costs a few counter increments and
histogram observations. Live values (in-flight, health, breaker, score) are read from
the balancer state at scrape time by a collector instead of being updated per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, disable_created_metrics

from balancers import Reason

from . import observe
from .exposition import render
from .fastmetrics import Counter, CounterChild, Histogram, HistogramChild
from .livemetrics import PREFIX, PoolCollector, TargetCollector
from .observe import RequestRecord
from .procmetrics import ProcessMetrics

if TYPE_CHECKING:
    from .routing import Route, Target

KONG_LATENCY_BUCKETS_MS = (
    250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 10000, 30000, 60000,
)  # fmt: skip
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BODY_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
OUTCOMES = (
    observe.SUCCESS,
    observe.CLIENT_ERROR,
    observe.UPSTREAM_ERROR,
    observe.GATEWAY_ERROR,
    observe.CANCELLED,
)
KONG_LABELS = (
    "ai_provider",
    "ai_model",
    "cache_status",
    "vector_db",
    "embeddings_provider",
    "embeddings_model",
    "workspace",
)
NO_TARGET = "-"  # label value when a request never reached a target


def kong_model(target: Target) -> str:
    """Kong's ai_model label: the target's configured name, never a client string."""
    return target.cfg.model.name or "unnamed"


class _TargetChildren:
    """Pre-resolved label children for one (route, target) pair."""

    __slots__ = (
        "duration",
        "errors",
        "kong_cost",
        "kong_latency",
        "kong_requests",
        "kong_tokens",
        "picks",
        "requests",
        "retries",
        "tokens",
        "tpot",
        "ttft",
    )
    requests: dict[tuple[str, str], CounterChild]  # (outcome, status class)
    duration: HistogramChild
    ttft: dict[bool, HistogramChild]  # by stream
    tpot: HistogramChild
    tokens: dict[tuple[str, str], CounterChild]  # (token type, source)
    errors: dict[Reason, CounterChild]
    retries: CounterChild
    picks: CounterChild
    kong_requests: CounterChild
    kong_tokens: dict[str, CounterChild]
    kong_cost: CounterChild | tuple[str, ...]  # label values until the first cost
    kong_latency: HistogramChild


class Metrics:
    def __init__(self, routes: Sequence[Route], clock: Callable[[], float]) -> None:
        # `*_created` series double the exposition and no dashboard uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._build(self.registry)
        # Series of the process rather than of requests: config, listeners, build.
        self.process = ProcessMetrics(self.registry)
        self._register_process_collectors()
        self.targets = TargetCollector(routes, clock)
        self.registry.register(self.targets)
        self.pools = PoolCollector()
        self.registry.register(self.pools)
        self._children: dict[tuple[str, str], _TargetChildren] = {}
        self._route_children: dict[str, tuple[HistogramChild, HistogramChild, CounterChild]] = {}
        self._queue_children: dict[str, tuple[HistogramChild, dict[str, CounterChild]]] = {}
        self.use(routes)

    def use(self, routes: Sequence[Route]) -> None:
        """Series for `routes` (at start and on each reload). Children of routes and
        targets that went away stay: their in-flight requests still finish into them,
        and Prometheus counters must not go backwards."""
        self.targets.routes = routes
        for route in routes:
            r = route.name
            self._route_children[r] = (
                self.body_size.labels(r),
                self.overhead.labels(r),
                self.failovers.labels(r),
            )
            if route.admission is not None:
                self._queue_children[r] = (
                    self.queue_wait.labels(r),
                    {k: self.queue_rejected.labels(r, k) for k in ("full", "timeout")},
                )
            for t in route.targets:
                self._children[(r, t.name)] = self._target_children(r, t)
            self._children[(r, NO_TARGET)] = self._target_children(r, None)

    # ------------------------------------------------------------------ definitions

    def _build(self, reg: CollectorRegistry) -> None:
        rtm = ("route", "target", "model")
        self.requests = Counter(
            PREFIX + "requests",
            "Client requests by outcome and HTTP status class.",
            (*rtm, "outcome", "status_class"),
            registry=reg,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Whole client request duration (streams: until the last event).",
            rtm,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Request start to the first answer byte sent to the client (streams: first event).",
            (*rtm, "stream"),
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.tpot = Histogram(
            PREFIX + "time_per_output_token_seconds",
            "Generation time per completion token (after the first token for streams).",
            rtm,
            buckets=TPOT_BUCKETS,
            registry=reg,
        )
        self.tokens = Counter(
            PREFIX + "tokens",
            "Tokens by type; source=estimated when the upstream reported none (~4 chars/token).",
            (*rtm, "token_type", "source"),
            registry=reg,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors",
            "Target failures by reason (connect, reset, timeout, status, invalid, midstream); "
            "status: upstream 5xx and 429 only.",
            ("route", "target", "reason"),
            registry=reg,
        )
        self.retries = Counter(
            PREFIX + "retries",
            "Failed attempts that were retried; label target = the target that failed.",
            ("route", "target"),
            registry=reg,
        )
        self.failovers = Counter(
            PREFIX + "failovers",
            "Client requests answered by another target than the first one tried.",
            ("route",),
            registry=reg,
        )
        self.picks = Counter(
            PREFIX + "balancer_picks",
            "Targets chosen by the balancer (one per attempt).",
            ("route", "target"),
            registry=reg,
        )
        self.body_size = Histogram(
            PREFIX + "request_body_bytes",
            "Size of client request bodies.",
            ("route",),
            buckets=BODY_BUCKETS,
            registry=reg,
        )
        self.overhead = Histogram(
            PREFIX + "proxy_overhead_seconds",
            "Time spent in the gateway before the answering upstream request was sent.",
            ("route",),
            buckets=OVERHEAD_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            PREFIX + "queue_wait_seconds",
            "Time requests waited in the admission queue for a free slot (queued ones).",
            ("route",),
            buckets=QUEUE_BUCKETS,
            registry=reg,
        )
        self.queue_rejected = Counter(
            PREFIX + "queue_rejected",
            "Requests refused by the admission queue: full (429) or timeout (503).",
            ("route", "reason"),
            registry=reg,
        )
        self.kong_requests = Counter(
            "kong_ai_llm_requests",
            "AI requests total per ai_model in Kong",
            KONG_LABELS,
            registry=reg,
        )
        self.kong_tokens = Counter(
            "kong_ai_llm_tokens",
            "AI tokens total per ai_model in Kong",
            (*KONG_LABELS, "token_type"),
            registry=reg,
        )
        self.kong_cost = Counter(
            "kong_ai_llm_cost", "AI requests cost per ai_model in Kong", KONG_LABELS, registry=reg
        )
        self.kong_latency = Histogram(
            "kong_ai_llm_provider_latency_ms",
            "LLM response Latency for each AI plugins per ai_model in Kong",
            KONG_LABELS,
            buckets=KONG_LATENCY_BUCKETS_MS,
            registry=reg,
        )

    def _register_process_collectors(self) -> None:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def _target_children(self, route: str, target: Target | None) -> _TargetChildren:
        """Children for one target; for `target=None` (rejected before any target was
        chosen) only the request counter exists."""
        c = _TargetChildren()
        name = target.name if target is not None else NO_TARGET
        model = kong_model(target) if target is not None else NO_TARGET
        # Pre-create the success series so dashboards show zeros, not gaps.
        c.requests = {
            (observe.SUCCESS, "2xx"): self.requests.labels(
                route, name, model, observe.SUCCESS, "2xx"
            )
        }
        if target is None:
            return c
        c.duration = self.duration.labels(route, name, model)
        c.ttft = {
            True: self.ttft.labels(route, name, model, "true"),
            False: self.ttft.labels(route, name, model, "false"),
        }
        c.tpot = self.tpot.labels(route, name, model)
        c.tokens = {
            (kind, src): self.tokens.labels(route, name, model, kind, src)
            for kind in ("prompt", "completion")
            for src in ("reported", "estimated")
        }
        c.errors = {r: self.upstream_errors.labels(route, name, r.value) for r in Reason}
        c.retries = self.retries.labels(route, name)
        c.picks = self.picks.labels(route, name)
        kl = ("llama2", model, "", "", "", "", "default")
        c.kong_requests = self.kong_requests.labels(*kl)
        c.kong_tokens = {
            k: self.kong_tokens.labels(*kl, k)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        c.kong_cost = kl  # the child is made on the first positive cost (Kong: only then)
        c.kong_latency = self.kong_latency.labels(*kl)
        return c

    # ------------------------------------------------------------------ recording

    def finished(self, rec: RequestRecord) -> None:
        route = rec.route.name
        body_size, overhead, failovers = self._route_children[route]
        body_size.observe(rec.body_size)
        if rec.queue_wait is not None or rec.queue_rejected is not None:
            wait, rejected = self._queue_children[route]
            if rec.queue_rejected is not None:
                rejected[rec.queue_rejected].inc()
            elif rec.queue_wait is not None:
                wait.observe(rec.queue_wait)
        target = rec.target
        c = self._children[(route, target.name if target is not None else NO_TARGET)]
        key = (rec.outcome, f"{rec.status // 100}xx" if rec.status else "none")
        child = c.requests.get(key)
        if child is None:
            model = kong_model(target) if target is not None else NO_TARGET
            name = target.name if target is not None else NO_TARGET
            child = c.requests[key] = self.requests.labels(route, name, model, *key)
        child.inc()
        children = self._children
        for i, failed in enumerate(rec.failures):
            fc = children[(route, failed.target.name)]
            if failed.fault:  # the one rule the breaker and /status count by too
                fc.errors[failed.reason].inc()
            fc.picks.inc()
            if i < rec.attempts - 1:  # another attempt followed this failure
                fc.retries.inc()
        if target is None:
            return
        if len(rec.failures) < rec.attempts:  # the last attempt did not fail
            c.picks.inc()
        c.duration.observe(rec.duration)
        if rec.proxy_latency is not None:
            overhead.observe(rec.proxy_latency)
        if rec.failures and rec.answered_by_upstream and rec.failures[0].target is not target:
            failovers.inc()
        if rec.ttft is not None:
            c.ttft[rec.stream].observe(rec.ttft)
        u = rec.usage
        if u is not None:
            src = "estimated" if u.estimated else "reported"
            if u.prompt_tokens:
                c.tokens[("prompt", src)].inc(u.prompt_tokens)
            if u.completion_tokens:
                c.tokens[("completion", src)].inc(u.completion_tokens)
                gen = rec.duration - (rec.ttft or 0.0) if rec.stream else rec.duration
                if gen > 0:
                    c.tpot.observe(gen / u.completion_tokens)
        if rec.answered_by_upstream:
            self._kong(c, rec)

    def _kong(self, c: _TargetChildren, rec: RequestRecord) -> None:
        c.kong_requests.inc()
        if rec.upstream_latency is not None:
            # Kong: provider latency; for a stream, time to first byte .
            c.kong_latency.observe(rec.upstream_latency * 1000)
        u = rec.usage
        if u is None or rec.status != 200:
            return
        c.kong_tokens["prompt_tokens"].inc(u.prompt_tokens)
        c.kong_tokens["completion_tokens"].inc(u.completion_tokens)
        c.kong_tokens["total_tokens"].inc(u.total_tokens)
        cost = rec.cost
        if cost > 0:
            if isinstance(c.kong_cost, tuple):
                c.kong_cost = self.kong_cost.labels(*c.kong_cost)
            c.kong_cost.inc(cost)

    def exposition(self) -> bytes:
        return render(self.registry)
