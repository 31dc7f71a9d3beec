"""`GET /status`: what each route and target is doing, for humans and scripts.

Built from config, balancer and health-checker state at request time. Never includes
auth values or URL queries (which may carry keys): upstreams are shown as
scheme://host:port/path, a probed URL with its query values masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from balancers.capacity import reported_busy, reported_deferred

from .discovery.signals import display_names

if TYPE_CHECKING:
    from .discovery import Discovery
    from .health import HealthChecker
    from .routing import Route, Target


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def probe_status(health: HealthChecker | None, target: Target) -> dict[str, Any] | None:
    """The active probe behind a target's `healthy`, or None when health checks are off
    for its route."""
    snap = health.prober_of(target.state) if health is not None else None
    if snap is None:
        return None
    last = snap["last_probe"]
    return {
        "url": snap["url"],
        "last_status": snap["last_status"],
        "last_error": snap["last_error"],
        "last_probe": _iso(last) if last is not None else None,
        "probes": snap["probes"],
    }


def target_status(
    route: Route,
    target: Target,
    now: float,
    health: HealthChecker | None = None,
    discovery: Discovery | None = None,
) -> dict[str, Any]:
    s = target.state
    max_age = route.balancer.options.signal_max_age
    url = target.cfg.options.upstream_url
    return {
        "name": target.name,
        "format": target.cfg.options.llama2_format,
        "model": target.cfg.model.name,
        "upstream": url.hostport,
        "path": url.path.split("?", 1)[0],
        "weight": target.cfg.weight,
        "health": {
            "active": "healthy" if s.healthy else "unhealthy",
            "breaker": s.breaker_state(now),
            "available": s.available(now),
            "last_change": _iso(s.last_change),
            "probe": probe_status(health, target),
        },
        "in_flight": s.in_flight,
        "score": route.balancer.score(s, now),
        "requests": s.requests,
        "failures": s.failures,
        "capacity": s.capacity,  # null: unlimited
        # What the server says about itself (null: not known, or too old).
        "busy_reported": reported_busy(s, now, max_age),
        "deferred_reported": reported_deferred(s, now, max_age),
        "models_installed": _names(s.models_installed),
        "models_loaded": _names(s.models_loaded),
        # The server poll behind the figures above (null: nothing is polled there).
        "discovery": discovery.server_of(s) if discovery is not None else None,
    }


def _names(models: frozenset[str] | None) -> list[str] | None:
    return display_names(models) if models is not None else None


def queue_status(route: Route) -> dict[str, Any] | None:
    a = route.admission
    if a is None:
        return None
    q = route.cfg.balancer.queue
    return {
        "depth": a.depth,
        "oldest_wait": round(a.oldest_wait(), 3),
        "max_size": q.max_size if q is not None else 0,
    }


def access_status(route: Route) -> dict[str, Any] | None:
    """Who may call the route and how much (no keys, no Redis URL); None: anyone."""
    guard = route.guard
    if guard is None:
        return None
    out: dict[str, Any] = {"key_auth": guard.key_auth is not None, "rate_limiting": None}
    limiter = guard.limiter
    if limiter is not None:
        cfg = limiter.cfg
        out["rate_limiting"] = {
            "identifier": cfg.identifier,
            "strategy": cfg.strategy,
            "limits": [{lim.kind: lim.limit, "window": lim.window} for lim in cfg.limits],
            "fault_tolerant": cfg.fault_tolerant,
            "store": "down" if limiter.store_down else "ok",
        }
    return out


def status_document(
    routes: Sequence[Route],
    clock: Callable[[], float],
    ready: bool,
    draining: bool,
    health: HealthChecker | None = None,
    discovery: Discovery | None = None,
) -> dict[str, Any]:
    now = clock()
    return {
        "ready": ready,
        "draining": draining,
        "routes": [
            {
                "name": r.name,
                "paths": list(r.cfg.paths),
                "route_type": r.cfg.route_type,
                "algorithm": r.cfg.balancer.algorithm,
                "queue": queue_status(r),
                "access": access_status(r),
                "targets": [target_status(r, t, now, health, discovery) for t in r.targets],
            }
            for r in routes
        ],
    }
