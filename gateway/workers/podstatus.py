"""The pod's /status: each worker's own document, and one merged like a single
process's, so scripts reading `routes[].targets[]` keep working.

Merging a target over the workers (matched by route and target name):

- counts add up: `in_flight`, `requests`, `failures` (of the live workers: unlike
  the metrics, a restarted worker's counts start again), queue `depth`;
- state is the worst worker's: `active` is healthy only when every worker's probes
  say so, `breaker` open if open anywhere (then half-open), `available` only when
  available in every worker; `last_change` the latest;
- what every worker reads from the same server or config is the first worker's, or the
  largest when their reads differ in age (`busy_reported`, `deferred_reported`,
  `oldest_wait`); `score` is the workers' mean; `probe` is the most recent one, with
  `probes` added up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_BREAKER_ORDER = {"closed": 0, "half_open": 1, "open": 2}


def _max(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def merge_target(ts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = dict(ts[0])
    for k in ("in_flight", "requests", "failures"):
        out[k] = sum(t.get(k) or 0 for t in ts)
    for k in ("busy_reported", "deferred_reported", "capacity"):
        out[k] = _max([t.get(k) for t in ts])
    scores = [t["score"] for t in ts if t.get("score") is not None]
    out["score"] = sum(scores) / len(scores) if scores else None
    healths = [t["health"] for t in ts if isinstance(t.get("health"), dict)]
    if healths:
        out["health"] = _merge_health(healths)
    return out


def _merge_health(hs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = dict(hs[0])
    out["active"] = "healthy" if all(h.get("active") == "healthy" for h in hs) else "unhealthy"
    out["breaker"] = max(
        (str(h.get("breaker")) for h in hs), key=lambda b: _BREAKER_ORDER.get(b, 0)
    )
    out["available"] = all(h.get("available") for h in hs)
    out["last_change"] = _max([h.get("last_change") for h in hs])  # ISO 8601: orders as text
    probes = [h["probe"] for h in hs if isinstance(h.get("probe"), dict)]
    if probes:
        latest = max(probes, key=lambda p: p.get("last_probe") or "")
        out["probe"] = {**latest, "probes": sum(p.get("probes") or 0 for p in probes)}
    return out


def merge_route(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rs[0])
    queues = [r["queue"] for r in rs if isinstance(r.get("queue"), dict)]
    if queues:
        out["queue"] = {
            **queues[0],
            "depth": sum(q.get("depth") or 0 for q in queues),
            "oldest_wait": _max([q.get("oldest_wait") for q in queues]),
        }
    limits = [
        a["rate_limiting"]
        for r in rs
        if isinstance(a := r.get("access"), dict) and isinstance(a.get("rate_limiting"), dict)
    ]
    if limits and isinstance(out.get("access"), dict):  # down if any worker finds it down
        down = any(rl.get("store") == "down" for rl in limits)
        out["access"] = {
            **out["access"],
            "rate_limiting": {**limits[0], "store": "down" if down else "ok"},
        }
    out["targets"] = [merge_target(ts) for ts in _by_name([r.get("targets") or [] for r in rs])]
    return out


def _by_name(lists: Sequence[Sequence[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Items with the same `name` across the lists, in first-seen order (the workers run
    the same config; for a moment after a reload they may not)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for items in lists:
        for item in items:
            groups.setdefault(item.get("name"), []).append(item)
    return list(groups.values())


def merge_routes(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [merge_route(rs) for rs in _by_name([d.get("routes") or [] for d in docs])]


def pod_document(
    *,
    ready: bool,
    draining: bool,
    pod: dict[str, Any],
    workers: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """`workers`: one entry per slot, its own document under `status` (null when it
    did not answer). The top-level `routes` merge the documents that came."""
    docs = [w["status"] for w in workers if isinstance(w.get("status"), dict)]
    return {
        "ready": ready,
        "draining": draining,
        "pod": pod,
        "routes": merge_routes(docs),
        "workers": list(workers),
    }
