"""The pod's /metrics: every worker's own exposition, merged into one.

The hot path stays the single-process one (gateway/fastmetrics.py, plain attribute
updates): nothing is shared between workers while they serve. At scrape time the
supervisor fetches each worker's /metrics over its private socket and merges them:

- the gateway's series (`llama_gateway_*`, `kong_ai_*`) become one series per label
  set, as a single process would export them: counters and histograms (buckets, sum,
  count) are summed; each gauge has its own rule (GAUGE_RULES; docs/metrics.md);
- every other family (`process_*`, `python_*`: per process by nature) keeps one series
  per worker, with a `worker` label (the slot, 0 … N-1), beside the supervisor's own
  unlabelled series.

A worker that dies takes counts with it that Prometheus has already seen; dropping
them would make every summed counter go backwards, which `rate()` reads as a reset and
turns into a spike. So the counters and histograms of a worker that is gone are kept
(`retire`) and added to the live workers' forever: the pod's counters never decrease.
What a killed worker counted after its last scrape is lost (an undercount, never a
spike). A worker that does not answer a scrape in time is counted with its last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

MERGED = ("llama_gateway_", "kong_ai_")  # one series for the pod; others: one per worker
CUMULATIVE = frozenset({"counter", "histogram", "summary"})  # summed, kept when retired

SUM, MAX, MIN, MEAN = "sum", "max", "min", "mean"
# How the workers' values of each gauge make the pod's. Every gauge the gateway exports
# is listed (a test checks it); one without a rule is merged by MAX.
GAUGE_RULES = {
    # Load: each worker carries its own share.
    "llama_gateway_in_flight_requests": SUM,
    "llama_gateway_queue_depth": SUM,
    "llama_gateway_upstream_connections": SUM,
    "llama_gateway_client_connections": SUM,
    # The longest wait anywhere in the pod.
    "llama_gateway_queue_oldest_wait_seconds": MAX,
    # Target state, judged by each worker on its own probes and traffic: the pod shows
    # the worst worker. Healthy only while every worker sees the target healthy; the
    # circuit open while it is open in any (some clients are kept off it).
    "llama_gateway_target_healthy": MIN,
    "llama_gateway_circuit_open": MAX,
    # Each worker's estimate of the same target (EWMA latency, decayed usage share).
    "llama_gateway_target_score": MEAN,
    # The server's own figures, read by every worker from the same server (capacity:
    # config or the server's slot count): equal up to the moment each last read it.
    "llama_gateway_target_capacity": MAX,
    "llama_gateway_target_busy_slots": MAX,
    "llama_gateway_build_info": MAX,
    # Config reloads: the oldest config any worker still runs, and 0 when the last
    # reload failed in any worker.
    "llama_gateway_config_last_reload_timestamp_seconds": MIN,
    "llama_gateway_config_last_reload_successful": MIN,
}
DEFAULT_GAUGE_RULE = MAX

Key = tuple[str, str]  # sample name, its label text as written (`{route="r",…}` or "")


@dataclass(slots=True)
class Family:
    name: str  # as on its TYPE line (counters with `_total`)
    type: str
    doc: str  # as written (escaped)
    samples: dict[Key, float] = field(default_factory=dict)


def parse(text: str) -> dict[str, Family]:
    """The families of a Prometheus text exposition as our render() writes it (HELP and
    TYPE first, no timestamps). Labels stay text: every worker writes one label set the
    same way, so the text is the series' identity, and nothing is unescaped or rebuilt.
    Hand-written because it is on the scrape path: prometheus_client's parser takes
    ~25 µs a line, 0.2 s for one worker with 100 targets; this takes ~1 µs."""
    out: dict[str, Family] = {}
    docs: dict[str, str] = {}
    fam: Family | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            if line.startswith("# HELP "):
                name, _, doc = line[7:].partition(" ")
                docs[name] = doc
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                fam = out.setdefault(name, Family(name, kind.strip(), docs.get(name, "")))
            continue
        if not line or fam is None:
            continue
        close = line.rfind("}")  # a value never has one; a label value may
        if close >= 0:
            series, value = line[: close + 1], line[close + 1 :]
            brace = series.index("{")
            sample, labels = series[:brace], series[brace:]
        else:
            sample, _, value = line.partition(" ")
            labels = ""
        fam.samples[(sample, labels)] = float(value.split()[0])
    return out


def _with_worker(labels: str, slot: int) -> str:
    pair = f'worker="{slot}"'
    return "{" + pair + "}" if not labels else labels[:-1] + "," + pair + "}"


def merged(name: str) -> bool:
    return name.startswith(MERGED)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


_REDUCE: dict[str, Callable[[Sequence[float]], float]] = {
    SUM: sum,
    MAX: max,
    MIN: min,
    MEAN: _mean,
}


def rule(fam: Family) -> str:
    if fam.type in CUMULATIVE:
        return SUM
    return GAUGE_RULES.get(fam.name, DEFAULT_GAUGE_RULE)


class PodMetrics:
    """The latest exposition of each live worker, and what retired workers counted."""

    def __init__(self) -> None:
        self.live: dict[int, dict[str, Family]] = {}  # slot → its latest scrape
        self.retired: dict[str, Family] = {}  # cumulative families of workers gone

    def update(self, slot: int, text: str) -> None:
        self.live[slot] = parse(text)

    def retire(self, slot: int) -> None:
        """The worker in `slot` is gone: keep its counters and histograms."""
        for name, fam in self.live.pop(slot, {}).items():
            if not merged(name) or fam.type not in CUMULATIVE:
                continue
            kept = self.retired.setdefault(name, Family(name, fam.type, fam.doc))
            for key, value in fam.samples.items():
                kept.samples[key] = kept.samples.get(key, 0.0) + value

    def render(self, slots: Iterable[int], own: str = "") -> bytes:
        """The pod's exposition: the workers in `slots` (their latest scrapes), the
        retired counts, and `own` (the supervisor's exposition: a family the workers
        have too becomes one family, the supervisor's series first)."""
        meta: dict[str, Family] = {}
        values: dict[str, dict[Key, list[float]]] = {}
        for name, fam in parse(own).items():
            meta[name] = fam
            values[name] = {key: [v] for key, v in fam.samples.items()}
        for slot in sorted(slots):
            for name, fam in self.live.get(slot, {}).items():
                meta.setdefault(name, fam)
                series = values.setdefault(name, {})
                if merged(name):
                    for key, value in fam.samples.items():
                        series.setdefault(key, []).append(value)
                else:
                    for (sample, labels), value in fam.samples.items():
                        series[(sample, _with_worker(labels, slot))] = [value]
        for name, fam in self.retired.items():
            meta.setdefault(name, fam)
            series = values.setdefault(name, {})
            for key, value in fam.samples.items():
                series.setdefault(key, []).append(value)
        out: list[str] = []
        for name, fam in meta.items():
            out.append(f"# HELP {name} {fam.doc}\n# TYPE {name} {fam.type}\n")
            reduce = _REDUCE[rule(fam)]
            for (sample, labels), vals in values[name].items():
                out.append(f"{sample}{labels} {floatToGoString(reduce(vals))}\n")
        return "".join(out).encode()
