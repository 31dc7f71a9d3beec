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
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import errors, events, openapi
from .accesslog import AccessLog
from .clientconn import ClientServer, fd_headroom
from .clientreq import ProxyRequest
from .config import Config
from .config.schema import ServerConfig
from .frontends import Catalog, route_models
from .http1 import Pool
from .jsonutil import dumps
from .metrics import Metrics
from .pipeline import Gateway
from .reload import ConfigWatcher, Reloader
from .replies import error_response, json_errors
from .routing import Route, Router
from .runtime import Carried, Runtime, carry_routes
from .security.clientip import networks
from .security.guard import attach_guards
from .security.metrics import SecurityMetrics
from .security.ratelimit import RateLimiter
from .security.stores import Store
from .status import status_document
from .statusrunner import LimitedAppRunner

if TYPE_CHECKING:
    from .discovery import Discovery
    from .health import HealthChecker

log = logging.getLogger("llama_gateway")

_JSON = "application/json"
# `server.*` is read at startup only (listeners cannot be re-bound in place, and its
# environment/CLI overrides apply once): a reload keeps the running values.
_STARTUP_ONLY = tuple(f.name for f in fields(ServerConfig))


class GatewayServer:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
        pod_counters: str | None = None,
    ) -> None:
        """`pod_counters`: the supervisor's counters socket, when this process is one
        of a pod's workers (rate limits with `strategy: local` count there)."""
        self.clock = clock
        self._local_store: Callable[[], Store] | None = None
        if pod_counters is not None:
            from .security.podstore import PodStore  # only a pod's workers need it

            self._local_store = partial(PodStore, pod_counters)
        self.ready = False
        self.draining = False
        self.gateway: Gateway | None = None
        self.started_at = time.time()
        routes, _ = carry_routes(config.routes, clock)
        self.metrics = Metrics(routes, clock)
        self.metrics.process.config_loaded(True, self.started_at, reload=False)
        self.security_metrics = SecurityMetrics(self.metrics.registry)
        attach_guards(
            routes,
            config.consumers,
            store_error=self.security_metrics.store_error,
            trusted_proxies=config.server.trusted_proxies,
            local_store=self._local_store,
        )
        self._retired: set[asyncio.Task[None]] = set()  # old rate limiters, closing
        self.access_log = AccessLog()
        self.runtime = self._runtime(config, routes)
        self._reloading = asyncio.Lock()
        self._proxy_runner: web.ServerRunner | None = None
        self._status_runner: web.AppRunner | None = None
        self.port = 0
        self.status_port = 0

    def _runtime(self, config: Config, routes: list[Route]) -> Runtime:
        return Runtime(
            config,
            routes,
            gateway=self._gateway,
            created=self.started_at,
            rejection=self.metrics.process.frontend_rejection,
            clock=self.clock,
        )

    # The running runtime's parts, for status, tests and tools.
    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def router(self) -> Router:
        return self.runtime.router

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    @property
    def health(self) -> HealthChecker | None:
        return self.runtime.health

    @property
    def discovery(self) -> Discovery | None:
        return self.runtime.discovery

    # ------------------------------------------------------------------ apps

    def proxy_server(self) -> ClientServer:
        """The proxy listener: aiohttp's low-level server, every request to `_proxy`
        (no router: every answer is ours), with the client limits of `server.*`
        (gateway/clientconn.py). Body limits are per route (and may change on reload):
        `read_body` enforces them while reading."""
        s = self.config.server
        server = ClientServer(
            self._proxy,
            header_timeout=s.client_header_timeout,
            body_timeout=s.client_body_timeout,
            body_min_rate=s.client_body_min_rate,
            keepalive_timeout=s.keepalive_timeout,
            max_connections=s.max_connections,
            count=self.metrics.process.client_counter(),
            access_log=None,  # per-request logging is the access log's job (opt-in per route)
            handler_cancellation=True,  # a client disconnect cancels the upstream call
        )
        self.metrics.process.client_connections.set_function(lambda: server.open)
        return server

    def _gateway(self) -> Gateway:
        assert self.gateway is not None, "server not started"
        return self.gateway

    def status_app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/openapi.json", self._openapi)
        return app

    async def _proxy(self, request: ProxyRequest) -> web.StreamResponse:
        if request.refusal is not None:  # refused before any route (clientreq.screen)
            return request.refusal
        rt = self.runtime  # read once: a reload during this request does not affect it
        path = request.path
        door = rt.doors.get(path)
        if door is not None:
            return await door(request)
        route = rt.router.match(path)
        if route is None:
            if rt.get_model is not None and path.startswith(rt.model_path or "\0"):
                return await rt.get_model(request)
            listed = rt.model_lists.get(path)
            if listed is not None and request.method in ("GET", "HEAD"):
                return route_models(request, listed, rt.catalog, int(rt.created))
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
        rt = self.runtime
        doc = status_document(
            rt.routes,
            self.clock,
            self.ready,
            self.draining,
            health=rt.health,
            discovery=rt.discovery,
        )
        return web.Response(body=dumps(doc), content_type=_JSON)

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=dumps(openapi.document(self.runtime)), content_type=_JSON)

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
        self.gateway = Gateway(
            pool,
            clock=self.clock,
            observers=(self.metrics, self.security_metrics, self.access_log),
            trusted=networks(s.trusted_proxies),
        )
        self._status_runner = LimitedAppRunner(
            self.status_app(),
            header_timeout=s.client_header_timeout,
            keepalive_timeout=s.keepalive_timeout,
            max_connections=s.max_connections,
            access_log=None,
        )
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
        fd_headroom(s.max_connections)
        self._proxy_runner = web.ServerRunner(self.proxy_server(), shutdown_timeout=1.0)
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
        await self.runtime.start_probes()
        self.ready = True

    async def reload(self, config: Config) -> Carried:
        """Swap in `config` (already validated): new requests use its routes, requests
        in flight finish on the old ones; unchanged routes and targets keep their state
        (see `runtime`). `server.*` is read at startup only: a change there is kept out
        and named in `Carried.restart_needed`."""
        async with self._reloading:
            old = self.runtime
            restart = [
                f"server.{k}"
                for k in _STARTUP_ONLY
                if getattr(config.server, k) != getattr(old.config.server, k)
            ]
            config = replace(config, server=old.config.server)
            routes, carried = carry_routes(config.routes, self.clock, old.routes)
            carried.restart_needed = restart
            retired = attach_guards(
                routes,
                config.consumers,
                old.routes,
                self.security_metrics.store_error,
                config.server.trusted_proxies,  # server.* as running (startup-only)
                self._local_store,
            )
            self.metrics.use(routes)
            new = self._runtime(config, routes)
            if self.gateway is not None:
                await new.start_probes()  # first probes before the swap
            self.runtime = new
            await old.stop_probes()
            for limiter in retired:
                self._retire(limiter, config.server.drain_timeout)
            self.metrics.process.config_loaded(True, time.time())
            return carried

    def _retire(self, limiter: RateLimiter, grace: float) -> None:
        """Close a replaced rate limiter once the old runtime's requests are done
        (they still charge their tokens to it)."""

        async def close() -> None:
            try:
                await asyncio.sleep(grace)
            finally:
                await limiter.close()

        task = asyncio.ensure_future(close())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def reload_failed(self) -> None:
        self.metrics.process.config_loaded(False, time.time())

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
        await self.runtime.stop_probes()
        for task in list(self._retired):
            task.cancel()  # closes its limiter now
        await asyncio.gather(*self._retired, return_exceptions=True)
        await asyncio.gather(
            *(r.guard.limiter.close() for r in self.runtime.routes if r.guard and r.guard.limiter),
            return_exceptions=True,
        )
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
    server: GatewayServer,
    started: Callable[[], None] | None = None,
    reload: Callable[[], Awaitable[bool]] | None = None,
    watch: str | None = None,
) -> None:
    """Run `server` until SIGTERM/SIGINT, then drain. A second signal cuts the drain short.
    With `reload`, SIGHUP reloads the config (and so does a change of the file `watch`).

    Handlers are installed explicitly: a process started in the background by a shell
    inherits SIGINT as ignored, and asyncio's default would leave it so.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()
    reloader = Reloader(reload) if reload is not None else None
    watcher = ConfigWatcher(watch, reloader.trigger) if watch and reloader else None

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("%s again: stopping now", signame)
            force.set()
        else:
            log.info("%s: draining (up to %ss)", signame, server.config.server.drain_timeout)
            stop.set()

    def on_hangup() -> None:
        if reloader is not None and not stop.is_set():
            reloader.trigger()

    signals = [signal.SIGTERM, signal.SIGINT]
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        signals.append(signal.SIGHUP)
    try:
        if watcher is not None:
            watcher.start()
        if started is not None:
            started()
        await stop.wait()
        if watcher is not None:
            await watcher.stop()
        if reloader is not None:
            await reloader.stop()  # a drain runs on the config it started with
        await server.drain(force=force)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
