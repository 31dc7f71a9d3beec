"""The pod's status listener (`server.status_host`:`status_port`), served by the
supervisor from the workers' private ones:

- /healthz: the supervisor is alive (it restarts workers that die or hang itself);
- /readyz: 200 once every worker has started, while at least one worker answers its
  own /readyz with 200; 503 `starting`, `draining` or `no worker ready`;
- /metrics: every worker's, merged (podmetrics.py), with the supervisor's own
  `process_*` series and the worker gauges;
- /status: the merged document and each worker's own (podstatus.py).

Workers are asked concurrently, each with a short timeout, so a stuck worker delays an
answer by at most that timeout and never blocks it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..exposition import render
from ..jsonutil import dumps
from ..livemetrics import PREFIX
from ..replies import json_errors
from ..statusrunner import LimitedAppRunner
from .client import get
from .podstatus import pod_document
from .slot import DRAINING, READY_STATE, REASONS, STATES

if TYPE_CHECKING:
    from .slot import Slot
    from .supervisor import Supervisor

SCRAPE_TIMEOUT = 2.0  # per worker, for /metrics and /status (Prometheus allows 10 s)
READY_TIMEOUT = 0.8  # per worker: a kubelet probe's default timeout is 1 s
_JSON = "application/json"


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class WorkerCollector(Collector):
    """`llama_gateway_workers{state}` and `llama_gateway_worker_restarts_total{reason}`,
    read from the supervisor at scrape time; every state and reason always present."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily(
            PREFIX + "workers",
            "Worker processes by state: starting, ready, backoff (dead, waiting to be "
            "restarted), draining.",
            labels=["state"],
        )
        for state in STATES:
            states.add_metric([state], sum(1 for s in self.sup.slots if s.state == state))
        restarts = CounterMetricFamily(
            PREFIX + "worker_restarts",
            "Workers restarted after dying: exited (with a code), signal (killed by one), "
            "unresponsive (killed by the supervisor after missed health checks).",
            labels=["reason"],
        )
        for reason in REASONS:
            restarts.add_metric([reason], self.sup.restarts[reason])
        return [states, restarts]


class PodStatusApp:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(WorkerCollector(sup))
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the bound port."""
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/openapi.json", self._openapi)
        s = self.sup.config.server
        self._runner = LimitedAppRunner(
            app,
            header_timeout=s.client_header_timeout,
            keepalive_timeout=s.keepalive_timeout,
            max_connections=s.max_connections,
            access_log=None,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # as server._bound_port
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, state = await self.pod_ready()
        return web.Response(
            status=200 if ok else 503, body=dumps({"status": state}), content_type=_JSON
        )

    async def pod_ready(self) -> tuple[bool, str]:
        """Ready when any worker is: with SO_REUSEPORT only listening workers get
        connections, and a worker listens from its start to its drain, so one ready
        worker serves every new connection while the others restart (docs/design.md)."""
        sup = self.sup
        if sup.draining:
            return False, "draining"
        if not sup.started_up:
            return False, "starting"
        asks = [
            asyncio.ensure_future(self._ready(s))
            for s in sup.slots
            if s.state == READY_STATE and s.alive
        ]
        try:
            for fut in asyncio.as_completed(asks):
                if await fut:
                    return True, "ready"
        finally:
            for fut in asks:
                fut.cancel()
        return False, "no worker ready"

    async def _ready(self, slot: Slot) -> bool:
        try:
            status, _ = await get(slot.status_path, "/readyz", READY_TIMEOUT)
        except (OSError, TimeoutError):
            return False
        return status == 200

    async def _metrics(self, request: web.Request) -> web.Response:
        sup = self.sup
        await asyncio.gather(*(self._scrape(s) for s in sup.slots))
        body = sup.pod_metrics.render(range(len(sup.slots)), render(self.registry).decode())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _scrape(self, slot: Slot) -> None:
        proc = slot.proc
        if proc is None or proc.returncode is not None or slot.state not in (READY_STATE, DRAINING):
            return
        try:
            status, body = await get(slot.status_path, "/metrics", SCRAPE_TIMEOUT)
        except (OSError, TimeoutError):
            return  # counted with its last scrape
        # Only this incarnation, and only while it lives: a worker that died during the
        # scrape has been retired already, and must not come back as a live one.
        if status == 200 and slot.proc is proc and proc.returncode is None:
            self.sup.pod_metrics.update(slot.index, body.decode())

    async def _status(self, request: web.Request) -> web.Response:
        sup = self.sup
        workers = await asyncio.gather(*(self._worker_status(s) for s in sup.slots))
        ready = (
            sup.started_up
            and not sup.draining
            and any(isinstance(w["status"], dict) and w["status"].get("ready") for w in workers)
        )
        pod = {
            "pid": os.getpid(),
            "started": _iso(sup.started_wall),
            "workers": len(sup.slots),
            "ready_workers": sum(1 for s in sup.slots if s.state == READY_STATE),
            "restarts": sum(sup.restarts.values()),
            "socket": sup.mode,
        }
        doc = pod_document(ready=ready, draining=sup.draining, pod=pod, workers=workers)
        return web.Response(body=dumps(doc), content_type=_JSON)

    async def _openapi(self, request: web.Request) -> web.Response:
        """Every worker serves the same config: the first one that answers speaks for
        the pod."""
        for slot in self.sup.slots:
            if not slot.alive or slot.state != READY_STATE:
                continue
            try:
                status, body = await get(slot.status_path, "/openapi.json", SCRAPE_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            if status == 200:
                return web.Response(body=body, content_type=_JSON)
        body = dumps({"error": {"message": "no worker is ready"}})
        return web.Response(status=503, body=body, content_type=_JSON)

    async def _worker_status(self, slot: Slot) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": slot.index,
            "pid": slot.pid if slot.alive else None,
            "state": slot.state,
            "started": _iso(slot.started_wall) if slot.alive else None,
            "restarts": slot.restarts,
            "status": None,
            "error": None,
        }
        if not slot.alive or slot.state not in (READY_STATE, DRAINING):
            return entry
        try:
            status, body = await get(slot.status_path, "/status", SCRAPE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            entry["error"] = f"no answer: {exc.__class__.__name__}"
            return entry
        if status != 200:
            entry["error"] = f"status {status}"
        else:
            entry["status"] = orjson.loads(body)
        return entry
