"""Active health checks for the configured targets: which URL to probe per format, with
which headers and policy. The probing itself is `checker` and `probe`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from yarl import URL

from ..config.schema import ActiveHealthcheck, TargetConfig
from .checker import HealthChecker, HealthPolicy
from .probe import ProbeSpec

if TYPE_CHECKING:
    from ..routing import Route


def probe_path(t: TargetConfig) -> str:
    """A cheap GET per dialect, never a generation."""
    o = t.options
    if o.llama2_format == "ollama":
        return "/"  # 200 "Ollama is running"
    if o.llama2_format == "openai":
        return "/v1/models"
    return "/health"  # llama.cpp (503 while loading) and TGI


def probe_spec(t: TargetConfig, hc: ActiveHealthcheck) -> ProbeSpec:
    url = URL(t.options.upstream_url.origin).with_path(hc.http_path or probe_path(t))
    auth = t.auth
    if auth.param_location == "query" and auth.param_name and auth.param_value:
        url = url.with_query({auth.param_name: auth.param_value})
    headers: tuple[tuple[str, str], ...] = ()
    if auth.header_name and auth.header_value:
        headers = ((auth.header_name, auth.header_value),)
    return ProbeSpec(str(url), headers)


def health_policy(hc: ActiveHealthcheck) -> HealthPolicy:
    h, u = hc.healthy, hc.unhealthy
    return HealthPolicy(
        timeout=hc.timeout,
        healthy_interval=h.interval,
        healthy_successes=h.successes,
        healthy_statuses=frozenset(h.http_statuses),
        unhealthy_interval=u.interval,
        unhealthy_http_failures=u.http_failures,
        unhealthy_tcp_failures=u.tcp_failures,
        unhealthy_timeouts=u.timeouts,
    )


def build_health_checker(routes: Sequence[Route]) -> HealthChecker | None:
    """One checker for every route with health checks on; None when no route has them."""
    checker = HealthChecker()
    n = 0
    for route in routes:
        hc = route.cfg.balancer.healthchecks
        if hc is None:
            continue
        policy = health_policy(hc)
        for t in route.targets:
            checker.add(probe_spec(t.cfg, hc), policy, t.state, route.name)
            n += 1
    return checker if n else None
