"""The two listeners and the process lifecycle.

Proxy listener: every route path → the shared `Gateway` handler. Status listener:
/healthz, /readyz (and later /metrics, /status). Shutdown drains: readiness goes 503,
the proxy stops accepting, in-flight requests and streams get `drain_timeout` seconds,
then remaining streams end with an error event and other requests get a 503.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import errors, events, requestid
from .accesslog import AccessLog
from .config import Config
from .discovery import build_discovery
from .frontends import Catalog, OllamaFront, OpenAIFront, route_models, sibling_lists
from .health import build_health_checker
from .http1 import Pool
from .jsonutil import dumps
from .metrics import Metrics
from .pipeline import Gateway
from .replies import error_response
from .routing import DISCOVERY_INTERVAL, Router, build_route
from .status import status_document

log = logging.getLogger("llama_gateway")

_JSON = "application/json"


class GatewayServer:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.ready = False
        self.draining = False
        self.router = Router([build_route(r, clock) for r in config.routes])
        self.metrics = Metrics(self.router.routes, clock)
        self.access_log = AccessLog()
        self.health = build_health_checker(self.router.routes)
        self.discovery = build_discovery(
            self.router.routes, interval=DISCOVERY_INTERVAL, clock=clock
        )
        self.gateway: Gateway | None = None
        self.catalog = Catalog(self.router.routes)
        self.started_at = time.time()
        # GET …/models next to each Kong-style route path ending in /chat/completions
        # or /completions (an OpenAI SDK with that route's base URL lists models there).
        self.model_lists = sibling_lists(self.router.routes, set(self.router.exact))
        self._proxy_runner: web.AppRunner | None = None
        self._status_runner: web.AppRunner | None = None
        self.port = 0
        self.status_port = 0

    # ------------------------------------------------------------------ apps

    def proxy_app(self) -> web.Application:
        limits = [r.cfg.max_request_body_size for r in self.router.routes]
        # The per-route limit is checked in the pipeline; aiohttp's cap only needs to
        # admit the largest one (0 = unlimited anywhere disables it).
        largest = 0 if 0 in limits else max(limits)
        app = web.Application(client_max_size=largest + 1 if largest else 0)
        for front in self._fronts(largest):
            front.rejected = self.metrics.frontend_rejection(front.name)
            app.router.add_routes(front.routes())
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        app.on_response_prepare.append(requestid.on_prepare)  # X-Request-Id on every answer
        return app

    def _fronts(self, body_limit: int) -> list[OpenAIFront | OllamaFront]:
        f = self.config.frontends
        out: list[OpenAIFront | OllamaFront] = []
        if f.openai is not None:
            out.append(
                OpenAIFront(f.openai, self.catalog, self._gateway, body_limit, int(self.started_at))
            )
        if f.ollama is not None:
            root = f.ollama + "/"
            free = root not in self.router.exact and root not in self.model_lists
            out.append(
                OllamaFront(
                    f.ollama, self.catalog, self._gateway, body_limit, self.started_at, free
                )
            )
        return out

    def _gateway(self) -> Gateway:
        assert self.gateway is not None, "server not started"
        return self.gateway

    def status_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        return app

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        route = self.router.match(request.path)
        if route is None:
            listed = self.model_lists.get(request.path)
            if listed is not None and request.method in ("GET", "HEAD"):
                return route_models(listed, self.catalog, int(self.started_at))
            return error_response(404, errors.NO_ROUTE)
        assert self.gateway is not None
        return await self.gateway.handle(request, route)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(body=b'{"status":"ready"}', content_type=_JSON)
        state = "draining" if self.draining else "starting"
        return web.Response(status=503, body=dumps({"status": state}), content_type=_JSON)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _status(self, request: web.Request) -> web.Response:
        doc = status_document(
            self.router.routes,
            self.clock,
            self.ready,
            self.draining,
            health=self.health,
            discovery=self.discovery,
        )
        return web.Response(body=dumps(doc), content_type=_JSON)

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        status_host: str | None = None,
        status_port: int | None = None,
        *,
        proxy_socks: list[socket.socket] | None = None,
        status_sock: socket.socket | None = None,
    ) -> None:
        """Listen and serve. `proxy_socks` / `status_sock`: sockets already bound, used
        instead of the addresses (a worker of a supervisor: gateway/workers)."""
        s = self.config.server
        pool = Pool()
        self.metrics.pools.stats = pool.stats
        self.gateway = Gateway(pool, clock=self.clock, observers=(self.metrics, self.access_log))
        self._status_runner = web.AppRunner(self.status_app(), access_log=None)
        await self._status_runner.setup()
        status_site: web.BaseSite
        if status_sock is not None:
            status_site = web.SockSite(self._status_runner, status_sock)
        else:
            status_site = web.TCPSite(
                self._status_runner,
                status_host or s.status_host,
                s.status_port if status_port is None else status_port,
            )
        await status_site.start()
        self.status_port = _bound_port(status_site)
        self._proxy_runner = web.AppRunner(
            self.proxy_app(),
            access_log=None,  # per-request logging is the access log's job (opt-in per route)
            handler_cancellation=True,  # a client disconnect cancels the upstream call
            shutdown_timeout=1.0,
        )
        await self._proxy_runner.setup()
        sites: list[web.BaseSite] = [
            web.SockSite(self._proxy_runner, sock, backlog=1024) for sock in proxy_socks or ()
        ] or [
            web.TCPSite(
                self._proxy_runner, host or s.host, s.port if port is None else port, backlog=1024
            )
        ]
        for site in sites:
            await site.start()
        self.port = _bound_port(sites[0])
        if self.health is not None:
            # First probes run now: a dead target is found before clients hit it.
            await self.health.start()
        if self.discovery is not None:
            await self.discovery.start()
        self.ready = True

    async def drain(self, timeout: float | None = None, force: asyncio.Event | None = None) -> None:
        """Graceful stop: no new connections, let work finish, then end what is left."""
        assert self.gateway is not None and self._proxy_runner is not None
        gw = self.gateway
        self.ready = False
        self.draining = True
        for site in list(self._proxy_runner.sites):
            await site.stop()
        server = self._proxy_runner.server
        if server is not None:
            server.pre_shutdown()  # close idle keep-alive connections now
        limit = self.config.server.drain_timeout if timeout is None else timeout
        began, in_flight = self.clock(), gw.in_flight
        events.drain_started(in_flight, limit)
        deadline = began + limit
        while gw.in_flight and self.clock() < deadline and not (force and force.is_set()):
            await asyncio.sleep(0.05)
        cut = len(gw.tasks)
        if gw.tasks:
            gw.closing = True  # committed streams get an error event, the rest a 503
            for task in list(gw.tasks):
                task.cancel()
            for _ in range(40):
                if not gw.tasks:
                    break
                await asyncio.sleep(0.05)
        events.drain_finished(in_flight, cut, self.clock() - began, bool(force and force.is_set()))
        await self.stop()

    async def stop(self) -> None:
        self.ready = False
        if self.health is not None:
            await self.health.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        if self._proxy_runner is not None:
            await self._proxy_runner.cleanup()
            self._proxy_runner = None
        if self.gateway is not None:
            await self.gateway.pool.close()
        if self._status_runner is not None:
            await self._status_runner.cleanup()
            self._status_runner = None


def _bound_port(site: web.BaseSite) -> int:
    # aiohttp exposes no public accessor for the bound socket; asyncio's and uvloop's
    # servers both have `sockets`, the abstract base does not declare it.
    sockets: list[socket.socket] = getattr(site._server, "sockets", None) or []
    assert sockets, "site not started"
    name = sockets[0].getsockname()
    return int(name[1]) if isinstance(name, tuple) else 0  # a unix socket has no port


async def run_until_signalled(
    server: GatewayServer, started: Callable[[], None] | None = None
) -> None:
    """Run `server` until SIGTERM/SIGINT, then drain. A second signal cuts the drain short.

    Handlers are installed explicitly: a process started in the background by a shell
    inherits SIGINT as ignored, and asyncio's default would leave it so.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("%s again: stopping now", signame)
            force.set()
        else:
            log.info("%s: draining (up to %ss)", signame, server.config.server.drain_timeout)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        if started is not None:
            started()
        await stop.wait()
        await server.drain(force=force)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
