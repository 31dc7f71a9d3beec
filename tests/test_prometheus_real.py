"""The Grafana dashboard and Prometheus rules against a real Prometheus (deploy/).

A real `prometheus` scrapes the in-process gateway (fake upstreams; successes, streams, an
upstream 500, a failover, a 400) and evaluates the repo's rules; then every dashboard
expression and every rule expression runs through its HTTP API: all must be valid, and
dashboard and recording-rule expressions must return data. `promtool` checks the
/metrics exposition, the rule file, the example config and runs the rule unit tests.

Needs the `prometheus` and `promtool` binaries (Debian: `apt-get install prometheus`;
.ci/run installs them); skipped without them.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helpers import route, target, url

from gateway.sim import Behaviour

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "llama-gateway.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "alerts_test.yaml"
EXAMPLE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.example.yml"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
_INSTALL = "install them with `apt-get install prometheus` (.ci/run does)"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason=f"promtool binary not found on PATH; {_INSTALL}"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason=f"prometheus/promtool binaries not found on PATH; {_INSTALL}",
)

# Grafana variables as "All" (allValue ".*") and the interval macros at a 15 s scrape.
GRAFANA_VARS = {
    "route": ".*",
    "target": ".*",
    "model": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
WAIT_TIMEOUT = 60.0  # seconds for Prometheus to have scraped and evaluated everything

# Every documented family (histograms by their _count) that one scrape must carry.
EXPECTED_SERIES = (
    "llama_gateway_requests_total",
    "llama_gateway_request_duration_seconds_count",
    "llama_gateway_time_to_first_token_seconds_count",
    "llama_gateway_time_per_output_token_seconds_count",
    "llama_gateway_tokens_total",
    "llama_gateway_upstream_errors_total",
    "llama_gateway_retries_total",
    "llama_gateway_failovers_total",
    "llama_gateway_balancer_picks_total",
    "llama_gateway_request_body_bytes_count",
    "llama_gateway_proxy_overhead_seconds_count",
    "llama_gateway_build_info",
    "llama_gateway_in_flight_requests",
    "llama_gateway_target_healthy",
    "llama_gateway_circuit_open",
    "llama_gateway_target_score",
    "llama_gateway_target_capacity",
    "llama_gateway_queue_depth",
    "llama_gateway_queue_wait_seconds_count",
    "llama_gateway_queue_rejected_total",
    "kong_ai_llm_requests_total",
    "kong_ai_llm_tokens_total",
    "kong_ai_llm_cost_total",
    "kong_ai_llm_provider_latency_ms_count",
    "process_cpu_seconds_total",
    "python_info",
)

CHAT = [{"role": "user", "content": "Why is the sky blue? Answer briefly."}]


# ------------------------------------------------------------------ what gets queried


def substitute(expr: str) -> str:
    """A dashboard expression as Grafana sends it with every variable at "All"."""
    return _VAR.sub(lambda m: GRAFANA_VARS[m.group(1) or m.group(2)], expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # rows (also collapsed ones)


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, raw expression) for every query target of every panel."""
    return [
        (p["title"], t["expr"])
        for p in _panels(load_dashboard()["panels"])
        for t in p.get("targets", [])
    ]


def load_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _label_values(query: str) -> tuple[str, str]:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert m, f"not a label_values(selector, label) query: {query}"
    return m.group(1), m.group(2)


# ------------------------------------------------------------------ static checks


def test_dashboard_shape() -> None:
    """Importable, one datasource variable everywhere, multi-value-safe selectors."""
    d = load_dashboard()
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    assert [(i["type"], i["pluginId"]) for i in d["__inputs"]] == [("datasource", "prometheus")]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == f"${{{d['__inputs'][0]['name']}}}"
    use_ds = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("route", "target", "model"):
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], name
        assert v["allValue"] == ".*" and v["datasource"] == use_ds, name
        _label_values(v["query"]["query"])
    panels = [p for p in _panels(d["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(d["panels"])}) == len(list(_panels(d["panels"])))
    for p in panels:
        assert p["datasource"] == use_ds, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == use_ds, p["title"]
            expr = t["expr"]
            # Multi-value variables need regex matchers: `="$route"` breaks with 2 values.
            assert not re.search(r'[^=!]=\s*"\$', expr), (p["title"], expr)
            # Windows follow the scrape interval, never a hard-coded range.
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", (p["title"], expr)
            substitute(expr)  # no unknown variable
    titles = " | ".join(p["title"] for p in panels)
    for needed in ("Time to first token", "Time per output token", "Gateway overhead", "Kong"):
        assert needed in titles


# ------------------------------------------------------------------ promtool


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_rules_and_config() -> None:
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _promtool("check", "config", str(EXAMPLE_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.prometheus
@needs_promtool
def test_promtool_rule_unit_tests_cover_every_alert() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t.get("exp_alerts") else silent).add(t["alertname"])
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    assert alerts == fired == silent, "each alert needs a firing and a not-firing case"
    assert any(case.get("promql_expr_test") for case in tests["tests"])
    r = _promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ real Prometheus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def query(self, http: aiohttp.ClientSession, expr: str) -> dict[str, Any]:
        """The decoded /api/v1/query answer (also for errors, which come as 400/422)."""
        assert self.proc.poll() is None, f"prometheus exited:\n{self.log_tail()}"
        async with http.get(f"{self.base}/api/v1/query", params={"query": expr}) as r:
            return await r.json()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(status_port: int) -> Prometheus:
        assert PROMETHEUS is not None
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "llama-gateway",
                    "static_configs": [{"targets": [f"127.0.0.1:{status_port}"]}],
                }
            ],
        }
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = _free_port()
        log_path = tmp_path / "prometheus.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        return Prometheus(proc, f"http://127.0.0.1:{port}", log_path)

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _has_data(answer: dict[str, Any]) -> bool:
    """A successful query with at least one finite sample."""
    if answer.get("status") != "success":
        return False
    data = answer["data"]
    samples = data["result"] if data["resultType"] == "vector" else [data]
    values = [s["value"][1] if "value" in s else s["result"][1] for s in samples]
    return any(math.isfinite(float(v)) for v in values)


async def _scalar(prom: Prometheus, http: aiohttp.ClientSession, expr: str) -> float:
    answer = await prom.query(http, expr)
    assert answer["status"] == "success", (expr, answer)
    result = answer["data"]["result"]
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


@pytest.mark.prometheus
@needs_prometheus
async def test_dashboard_and_rules_against_real_prometheus(upstream, gateway, prometheus) -> None:
    # Two models on two dialects; a route that always fails over from a dead target; a
    # route whose only upstream answers 500; a lowest-usage route.
    llama = await upstream("ollama", behaviour=Behaviour(n_tokens=6, token_interval=0.002))
    mistral = await upstream(
        "openai", models=("mistral",), behaviour=Behaviour(n_tokens=4, token_interval=0.002)
    )
    broken = await upstream("ollama", behaviour=Behaviour(status=500))
    slow = await upstream("ollama", behaviour=Behaviour(n_tokens=4, token_interval=0.1))
    dead = f"http://127.0.0.1:{_free_port()}/api/chat"
    gw = await gateway(
        route(
            target(llama, "/api/chat", options={"input_cost": 10, "output_cost": 20}),
            target(mistral, "/v1/chat/completions", fmt="openai", name="mistral"),
            path="/chat",
            name="chat",
        ),
        route(
            target(dead, "", weight=65535),
            target(llama, "/api/chat", weight=1),
            path="/failover",
            name="failover",
        ),
        route(target(broken, "/api/chat"), path="/broken", name="broken"),
        # target_score exists only for algorithms that keep a score.
        route(
            target(llama, "/api/chat"),
            path="/usage",
            name="usage",
            balancer={"algorithm": "lowest-usage"},
        ),
        # One slot and a queue: concurrent streams queue behind each other.
        route(
            target(slow, "/api/chat", max_concurrency=1),
            path="/queued",
            name="queued",
            balancer={"queue": {"max_size": 10, "timeout": 30000}},
        ),
    )
    prom = prometheus(gw.status_port)

    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with http.post(url(gw, path), json=body) as r:
                await r.read()
                return r.status, r.headers

        async def drive() -> None:
            for stream in (False, False, True, True):  # both chat targets, both kinds
                status, _ = await post("/chat", {"messages": CHAT, "stream": stream})
                assert status == 200
            status, headers = await post("/failover", {"messages": CHAT})
            assert status == 200 and headers["X-Gateway-Attempts"] == "2"
            assert (await post("/broken", {"messages": CHAT}))[0] == 500
            assert (await post("/usage", {"messages": CHAT}))[0] == 200
            assert (await post("/chat", {"prompt": "not a chat body"}))[0] == 400
            # Three at once on one slot (each stream lasts 0.4 s): two of them queue.
            queued = await asyncio.gather(
                *(post("/queued", {"messages": CHAT, "stream": True}) for _ in range(3))
            )
            assert [status for status, _ in queued] == [200, 200, 200]

        rules = load_rules()
        records = [r["record"] for r in rules if "record" in r]
        dashboard = [(title, substitute(e)) for title, e in dashboard_queries()]
        recording = [(r["record"], r["expr"]) for r in rules if "record" in r]
        variables = [
            (v["name"], *_label_values(v["query"]["query"]))
            for v in load_dashboard()["templating"]["list"]
            if v["type"] == "query"
        ]
        must_have_data = [
            ("scrape", 'up{job="llama-gateway"} == 1'),
            *[("series", f"count({name})") for name in EXPECTED_SERIES],
            *[("recorded", f"{name}") for name in records],
            *[(f"variable {n}", substitute(sel)) for n, sel, _ in variables],
            *[(f"dashboard: {t}", e) for t, e in dashboard],
            *[(f"rule {n}", e) for n, e in recording],
            # Every route's ratio, not just one: a route seen in one scrape only is NaN.
            *[
                ("ratio", f'route:llama_gateway_request_errors:ratio_rate5m{{route="{r}"}}')
                for r in ("broken", "chat")
            ],
        ]

        started = time.monotonic()
        missing: list[tuple[str, str, Any]] = []
        while True:
            await drive()
            try:
                async with http.get(f"{prom.base}/-/ready") as r:
                    ready = r.status == 200
            except aiohttp.ClientConnectionError:
                ready = False
            if ready:
                missing = []
                for what, expr in must_have_data:
                    answer = await prom.query(http, expr)
                    # Invalid PromQL stays invalid: no point in waiting for it.
                    assert answer["status"] == "success", (what, expr, answer)
                    if not _has_data(answer):
                        missing.append((what, expr, answer))
                if not missing:
                    break
            assert prom.proc.poll() is None, f"prometheus exited:\n{prom.log_tail()}"
            if time.monotonic() - started > WAIT_TIMEOUT:
                detail = "\n".join(f"{w}: {e}\n  -> {a}" for w, e, a in missing) or "not ready"
                pytest.fail(
                    f"after {WAIT_TIMEOUT:.0f} s these returned no data:\n{detail}\n"
                    f"prometheus log:\n{prom.log_tail()}"
                )
            await asyncio.sleep(0.5)

        # Alert expressions are valid PromQL (whether they fire is promtool's test).
        for r in rules:
            if "alert" in r:
                answer = await prom.query(http, r["expr"])
                assert answer["status"] == "success", (r["alert"], answer)
        # Prometheus loaded every rule and evaluates it without error.
        async with http.get(f"{prom.base}/api/v1/rules") as resp:
            loaded = [r for g in (await resp.json())["data"]["groups"] for r in g["rules"]]
        assert len(loaded) == len(rules)
        for r in loaded:
            assert r["health"] == "ok", r

        # The traffic mix really reached Prometheus.
        assert await _scalar(prom, http, "sum(llama_gateway_failovers_total)") >= 1
        assert await _scalar(prom, http, 'sum(llama_gateway_retries_total{route="failover"})') >= 1
        assert (
            await _scalar(
                prom,
                http,
                'sum(llama_gateway_upstream_errors_total{route="failover",reason="connect"})',
            )
            >= 1
        )
        assert (
            await _scalar(
                prom, http, 'sum(llama_gateway_requests_total{target="-",outcome="client_error"})'
            )
            >= 1
        )
        assert (
            await _scalar(
                prom, http, 'sum(llama_gateway_time_to_first_token_seconds_count{stream="true"})'
            )
            >= 2
        )
        assert await _scalar(prom, http, "sum(kong_ai_llm_cost_total)") > 0
        # The broken route is all errors; chat's 400s (target "-") are not errors.
        ratio = "route:llama_gateway_request_errors:ratio_rate5m"
        assert await _scalar(prom, http, f'{ratio}{{route="broken"}}') == 1
        assert await _scalar(prom, http, f'{ratio}{{route="chat"}}') == 0
        for name, sel, label in variables:
            answer = await prom.query(http, f"count by ({label}) ({substitute(sel)})")
            values = {s["metric"][label] for s in answer["data"]["result"]}
            assert len(values) >= 2, (name, values)
        elapsed = time.monotonic() - started

        # promtool on our exposition: only Kong's own name (abbreviated unit) is flagged.
        async with http.get(f"http://127.0.0.1:{gw.status_port}/metrics") as r:
            exposition = await r.text()
    check = _promtool("check", "metrics", stdin=exposition)
    findings = [line for line in (check.stdout + check.stderr).splitlines() if line.strip()]
    assert findings, "promtool should flag kong_ai_llm_provider_latency_ms "
    assert all(f.startswith("kong_ai_llm_provider_latency_ms ") for f in findings), findings
    assert "kong_ai_llm_cost_total{" in exposition  # the checked text had every family
    assert elapsed < WAIT_TIMEOUT
