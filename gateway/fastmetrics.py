"""Lock-free Counter and Histogram families for the request hot path.

prometheus_client guards every increment with a threading lock and checks observability
on each call; the gateway runs on one event loop, so plain attribute updates are safe
and several times cheaper. The families register with a prometheus_client registry as
collectors, so exposition, process metrics and the text format stay prometheus_client's.
Constructor and `labels()` mirror prometheus_client's, so either can be swapped in.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last = +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # `le` is inclusive: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


ChildT = TypeVar("ChildT", "CounterChild", "HistogramChild")


class _Family(Collector, Generic[ChildT]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], ChildT] = {}
        if registry is not None:
            registry.register(self)

    def _new(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str) -> ChildT:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._new()
        return child

    def describe(self) -> Iterable[Metric]:
        return []


class Counter(_Family[CounterChild]):
    def _new(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterable[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            fam.add_metric(key, child.value)
        return [fam]


class Histogram(_Family[HistogramChild]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            cumulative, running = [], 0
            for le, n in zip(self._le, child.counts, strict=True):
                running += n
                cumulative.append((le, running))
            fam.add_metric(key, cumulative, child.sum)
        return [fam]
