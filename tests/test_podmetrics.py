"""Merging the workers' expositions into the pod's (gateway/workers/podmetrics.py), the
pod's /status document, and how many workers `auto` means."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import route, target
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse
from gateway.metrics import Metrics
from gateway.runtime import carry_routes
from gateway.workers.count import cgroup_cpu_limit, parse_workers, worker_count
from gateway.workers.podmetrics import GAUGE_RULES, PodMetrics
from gateway.workers.podmetrics import parse as parse_text
from gateway.workers.podstatus import merge_route, merge_target

WORKER_0 = """# HELP llama_gateway_requests_total Client requests.
# TYPE llama_gateway_requests_total counter
llama_gateway_requests_total{route="r",target="a"} 3.0
# HELP llama_gateway_in_flight_requests In flight.
# TYPE llama_gateway_in_flight_requests gauge
llama_gateway_in_flight_requests{route="r",target="a"} 2.0
# HELP llama_gateway_target_healthy Healthy.
# TYPE llama_gateway_target_healthy gauge
llama_gateway_target_healthy{route="r",target="a"} 1.0
# HELP llama_gateway_circuit_open Open.
# TYPE llama_gateway_circuit_open gauge
llama_gateway_circuit_open{route="r",target="a"} 0.0
# HELP llama_gateway_target_score Score.
# TYPE llama_gateway_target_score gauge
llama_gateway_target_score{route="r",target="a"} 0.2
# HELP llama_gateway_d_seconds Duration.
# TYPE llama_gateway_d_seconds histogram
llama_gateway_d_seconds_bucket{route="r",le="0.1"} 1.0
llama_gateway_d_seconds_bucket{route="r",le="+Inf"} 3.0
llama_gateway_d_seconds_count{route="r"} 3.0
llama_gateway_d_seconds_sum{route="r"} 0.9
# HELP process_cpu_seconds_total CPU.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
"""
WORKER_1 = (
    WORKER_0.replace("} 3.0", "} 5.0")
    .replace('target="a"} 2.0', 'target="a"} 1.0')
    .replace('healthy{route="r",target="a"} 1.0', 'healthy{route="r",target="a"} 0.0')
    .replace('open{route="r",target="a"} 0.0', 'open{route="r",target="a"} 1.0')
    .replace("} 0.2", "} 0.4")
    .replace("total 1.5", "total 2.5")
)


def values(
    pod: PodMetrics, slots: list[int]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = pod.render(slots).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(s.labels.items()))
            assert key not in out, key
            out[key] = s.value
    return out


RA = (("route", "r"), ("target", "a"))


def test_counters_and_histograms_add_gauges_follow_their_rule() -> None:
    pod = PodMetrics()
    pod.update(0, WORKER_0)
    pod.update(1, WORKER_1)
    v = values(pod, [0, 1])
    assert v[("llama_gateway_requests_total", RA)] == 8
    assert v[("llama_gateway_d_seconds_bucket", (("route", "r"), ("le", "+Inf")))] == 8
    assert v[("llama_gateway_d_seconds_count", (("route", "r"),))] == 8
    assert v[("llama_gateway_d_seconds_sum", (("route", "r"),))] == pytest.approx(1.8)
    assert v[("llama_gateway_in_flight_requests", RA)] == 3  # sum
    assert v[("llama_gateway_target_healthy", RA)] == 0  # min: not healthy everywhere
    assert v[("llama_gateway_circuit_open", RA)] == 1  # max: open somewhere
    assert v[("llama_gateway_target_score", RA)] == pytest.approx(0.3)  # mean
    # per process: one series per worker
    assert v[("process_cpu_seconds_total", (("worker", "0"),))] == 1.5
    assert v[("process_cpu_seconds_total", (("worker", "1"),))] == 2.5


def test_a_dead_workers_counts_stay_and_its_gauges_go() -> None:
    pod = PodMetrics()
    pod.update(0, WORKER_0)
    pod.update(1, WORKER_1)
    seen = values(pod, [0, 1])
    pod.retire(1)
    v = values(pod, [0, 1])
    assert v[("llama_gateway_requests_total", RA)] == 8, "kept: never backwards"
    assert v[("llama_gateway_in_flight_requests", RA)] == 2, "gauges of the dead: gone"
    assert ("process_cpu_seconds_total", (("worker", "1"),)) not in v
    pod.update(1, WORKER_0.replace("} 3.0", "} 1.0"))  # the new worker in slot 1
    v = values(pod, [0, 1])
    assert v[("llama_gateway_requests_total", RA)] == 3 + 5 + 1
    for key, value in seen.items():
        if key[0].startswith("llama_gateway_") and key[0].endswith(("_total", "_count")):
            assert v[key] >= value


def test_every_gauge_the_gateway_exports_has_a_rule() -> None:
    """A new gauge must say how workers combine (podmetrics.GAUGE_RULES)."""
    cfg = parse(
        {
            "routes": [
                route(
                    target("http://127.0.0.1:9/api/chat", "/api/chat", max_concurrency=2),
                    balancer={"algorithm": "lowest-latency", "queue": {"max_size": 5}},
                )
            ]
        },
        {},
    )
    routes, _ = carry_routes(cfg.routes, time.monotonic)
    text = Metrics(routes, time.monotonic).exposition().decode()
    gauges = {
        f.name
        for f in text_string_to_metric_families(text)
        if f.type == "gauge" and f.name.startswith(("llama_gateway_", "kong_ai_"))
    }
    assert gauges, "the exposition has gateway gauges"
    assert gauges <= set(GAUGE_RULES), gauges - set(GAUGE_RULES)


def test_supervisor_families_join_the_workers_under_one_name() -> None:
    pod = PodMetrics()
    pod.update(0, WORKER_0)
    own = (
        "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 0.5\n"
    )
    text = pod.render([0], own).decode()
    assert text.count("# TYPE process_cpu_seconds_total counter") == 1
    assert "process_cpu_seconds_total 0.5\n" in text
    assert 'process_cpu_seconds_total{worker="0"} 1.5\n' in text


def test_the_fast_parser_reads_what_prometheus_client_reads() -> None:
    """Our parser against prometheus_client's on a real worker exposition (label values
    with spaces, braces and quotes included) and on the merged output."""
    cfg = parse(
        {"routes": [route(target("http://127.0.0.1:9/api/chat", "/api/chat"), name='a }" b')]},
        {},
    )
    routes, _ = carry_routes(cfg.routes, time.monotonic)
    text = Metrics(routes, time.monotonic).exposition().decode()
    ours = parse_text(text)
    theirs = list(text_string_to_metric_families(text))
    assert sum(len(f.samples) for f in ours.values()) == sum(len(f.samples) for f in theirs)
    pod = PodMetrics()
    pod.update(0, text)
    pod.update(1, text)
    merged = list(text_string_to_metric_families(pod.render([0, 1]).decode()))
    assert {f.name for f in merged} == {f.name for f in theirs}
    requests = next(f for f in merged if f.name == "llama_gateway_requests")
    assert any(s.labels["route"] == 'a }" b' for s in requests.samples)


def test_merged_target_status() -> None:
    def t(requests: int, active: str, breaker: str, score: float | None) -> dict:
        return {
            "name": "a",
            "in_flight": 1,
            "requests": requests,
            "failures": 0,
            "score": score,
            "capacity": 2,
            "busy_reported": None,
            "deferred_reported": None,
            "health": {
                "active": active,
                "breaker": breaker,
                "available": active == "healthy" and breaker == "closed",
                "last_change": "2026-01-01T00:00:00Z",
                "probe": None,
            },
        }

    m = merge_target([t(3, "healthy", "closed", 0.1), t(4, "unhealthy", "half_open", 0.3)])
    assert m["requests"] == 7 and m["in_flight"] == 2 and m["capacity"] == 2
    assert m["score"] == pytest.approx(0.2)
    assert m["health"]["active"] == "unhealthy" and m["health"]["breaker"] == "half_open"
    assert m["health"]["available"] is False


def test_merged_route_access_is_down_when_any_worker_finds_the_store_down() -> None:
    def doc(store: str) -> dict[str, Any]:
        rl = {"identifier": "ip", "strategy": "redis", "limits": [], "store": store}
        return {"name": "r", "access": {"key_auth": True, "rate_limiting": rl}, "targets": []}

    assert merge_route([doc("ok"), doc("ok")])["access"]["rate_limiting"]["store"] == "ok"
    merged = merge_route([doc("ok"), doc("down")])["access"]
    assert merged["rate_limiting"]["store"] == "down" and merged["key_auth"] is True
    assert merge_route([{"name": "r", "access": None, "targets": []}])["access"] is None


def test_worker_count() -> None:
    assert parse_workers("auto") == "auto" and parse_workers("3") == 3
    for bad in ("0", "-1", "x", "257"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_workers(bad)
    assert worker_count(4) == 4 and worker_count("auto") >= 1


def test_cgroup_cpu_limits(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    # v2: the tightest quota on the way up to the root counts
    proc.write_text("0::/kubepods/pod1/ctr\n")
    (tmp_path / "kubepods/pod1/ctr").mkdir(parents=True)
    (tmp_path / "kubepods/pod1/ctr/cpu.max").write_text("max 100000\n")
    (tmp_path / "kubepods/pod1/cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path, proc) == 1.5
    # v1, inside a container: its own cgroup is the mount's root
    proc.write_text("4:cpu,cpuacct:/docker/abc\n")
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu,cpuacct/cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu,cpuacct/cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path, proc) == 3.0
    (tmp_path / "cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path, proc) is None
