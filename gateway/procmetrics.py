"""Series about the process rather than about requests: config loads and reloads,
front-door and listener refusals, open client connections, the build."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from .clientconn import REASONS as CLIENT_REASONS
from .fastmetrics import Counter
from .livemetrics import PREFIX


class ProcessMetrics:
    def __init__(self, reg: CollectorRegistry) -> None:
        self.frontend_rejected = Counter(
            PREFIX + "frontend_rejected",
            "Front-door requests answered before any route was chosen, by reason: "
            "unknown_model, unsupported (another route type serves it), bad_request, "
            "too_large, body_timeout, method.",
            ("frontend", "reason"),
            registry=reg,
        )
        self.config_reloads = Counter(
            PREFIX + "config_reloads",
            "Config reloads (SIGHUP or a watched file change), by result: success, failure.",
            ("result",),
            registry=reg,
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result)  # zeros, not gaps, before the first reload
        self.config_last_reload = Gauge(
            PREFIX + "config_last_reload_timestamp_seconds",
            "Unix time the running config was loaded (at start, then each successful reload).",
            registry=reg,
        )
        self.config_last_reload_ok = Gauge(
            PREFIX + "config_last_reload_successful",
            "1 when the last reload attempt succeeded (or none failed since start), else 0.",
            registry=reg,
        )
        self.client_rejected = Counter(
            PREFIX + "client_connections_rejected",
            "Client connections the proxy listener ended or refused, by reason: "
            "max_connections (503), idle_timeout (no byte within client_header_timeout), "
            "header_timeout, body_timeout (408), bad_request (unparsable request), "
            "content_encoding (415), expectation (417), transfer_encoding (501).",
            ("reason",),
            registry=reg,
        )
        for reason in CLIENT_REASONS:
            self.client_rejected.labels(reason)  # zeros, not gaps
        self.client_connections = Gauge(
            PREFIX + "client_connections",
            "Open client connections on the proxy listener.",
            registry=reg,
        )
        self.info = Gauge(
            PREFIX + "build_info",
            "Gateway version (value is always 1).",
            ("version",),
            registry=reg,
        )
        from . import __version__

        self.info.labels(__version__).set(1)

    def config_loaded(self, ok: bool, wall: float, reload: bool = True) -> None:
        if reload:
            self.config_reloads.labels("success" if ok else "failure").inc()
        self.config_last_reload_ok.set(1 if ok else 0)
        if ok:
            self.config_last_reload.set(wall)

    def frontend_rejection(self, frontend: str) -> Callable[[str], None]:
        """The counter a front door calls with the reason of each request it refuses
        (these never reach a route, so the route series do not see them)."""
        family = self.frontend_rejected

        def count(reason: str) -> None:
            family.labels(frontend, reason).inc()

        return count

    def client_counter(self) -> Callable[[str], None]:
        """The counter the proxy listener calls with the reason of each connection it
        ends or refuses on the client's account (gateway/clientconn.py)."""
        children = {r: self.client_rejected.labels(r) for r in CLIENT_REASONS}

        def count(reason: str) -> None:
            children[reason].inc()

        return count
