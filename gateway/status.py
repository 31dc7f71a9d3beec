"""`GET /status`: what each route and target is doing, for humans and scripts (SPEC §2).

Built from config and balancer state at request time. Never includes auth values or
URL queries (which may carry keys): upstreams are shown as scheme://host:port/path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .routing import Route


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def target_status(route: Route, target: Any, now: float) -> dict[str, Any]:
    s = target.state
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
        },
        "in_flight": s.in_flight,
        "score": route.balancer.score(s, now),
        "requests": s.requests,
        "failures": s.failures,
    }


def status_document(
    routes: Sequence[Route], clock: Callable[[], float], ready: bool, draining: bool
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
                "targets": [target_status(r, t, now) for t in r.targets],
            }
            for r in routes
        ],
    }
