"""Series read at scrape time instead of being updated per request: target state from
the balancers (in flight, health, breaker, score) and the upstream connection pools."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from balancers.capacity import reported_busy

if TYPE_CHECKING:
    from .routing import Route

PREFIX = "llama_gateway_"
PoolStats = Callable[[], Iterable[tuple[str, int, int, int]]]


class TargetCollector(Collector):
    """Gauges read from balancer state at scrape time (no per-request updates)."""

    def __init__(self, routes: Sequence[Route], clock: Callable[[], float]) -> None:
        self.routes = routes
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        labels = ["route", "target"]
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight_requests", "Upstream attempts in progress.", labels=labels
        )
        healthy = GaugeMetricFamily(
            PREFIX + "target_healthy",
            "1 when active health checks consider the target healthy.",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            PREFIX + "circuit_open",
            "1 while the passive circuit breaker keeps the target out.",
            labels=labels,
        )
        score = GaugeMetricFamily(
            PREFIX + "target_score",
            "Balancer score (lowest-latency: EWMA seconds; lowest-usage: decayed usage).",
            labels=labels,
        )
        opens = CounterMetricFamily(
            PREFIX + "circuit_opens",
            "Times the circuit breaker opened (catches open periods shorter than a scrape).",
            labels=labels,
        )
        capacity = GaugeMetricFamily(
            PREFIX + "target_capacity",
            "Requests the target's server generates at once (max_concurrency, or read "
            "from the server for auto); absent when unlimited.",
            labels=labels,
        )
        busy_slots = GaugeMetricFamily(
            PREFIX + "target_busy_slots",
            "Busy slots the target's server reports itself (other clients included); "
            "absent when the server reports none or the figure is stale.",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            PREFIX + "queue_depth", "Requests waiting in the admission queue.", labels=["route"]
        )
        oldest = GaugeMetricFamily(
            PREFIX + "queue_oldest_wait_seconds",
            "How long the longest-waiting queued request has waited.",
            labels=["route"],
        )
        now = self.clock()
        for route in self.routes:
            if route.admission is not None:
                depth.add_metric([route.name], route.admission.depth)
                oldest.add_metric([route.name], route.admission.oldest_wait())
            max_age = route.balancer.options.signal_max_age
            for t in route.targets:
                s = t.state
                lv = [route.name, t.name]
                if s.capacity is not None:
                    capacity.add_metric(lv, s.capacity)
                reported = reported_busy(s, now, max_age)
                if reported is not None:
                    busy_slots.add_metric(lv, reported)
                s = t.state
                lv = [route.name, t.name]
                in_flight.add_metric(lv, s.in_flight)
                healthy.add_metric(lv, 1.0 if s.healthy else 0.0)
                circuit.add_metric(lv, 1.0 if s.open_until > now else 0.0)
                opens.add_metric(lv, s.opens)
                value = route.balancer.score(s, now)
                if value is not None:
                    score.add_metric(lv, value)
        return [in_flight, healthy, circuit, opens, score, capacity, busy_slots, depth, oldest]


class PoolCollector(Collector):
    """Keep-alive health of the upstream connections, per upstream origin: how many are
    idle and busy, and how many were ever opened (a rate near the request rate means
    connections are not being reused)."""

    def __init__(self) -> None:
        self.stats: PoolStats | None = None  # set once the pool exists (server start)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        conns = GaugeMetricFamily(
            PREFIX + "upstream_connections",
            "Open upstream connections by state (idle in the keep-alive pool, or busy).",
            labels=["upstream", "state"],
        )
        opened = CounterMetricFamily(
            PREFIX + "upstream_connections_opened",
            "Upstream connections opened (TCP, and TLS where used).",
            labels=["upstream"],
        )
        for upstream, idle, busy, total in self.stats() if self.stats is not None else ():
            conns.add_metric([upstream, "idle"], idle)
            conns.add_metric([upstream, "busy"], busy)
            opened.add_metric([upstream], total)
        return [conns, opened]
