"""`FakeUpstream`: one simulated LLM server of a given kind on a real TCP port."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from aiohttp import web

from gateway.sim.base import Core, Dialect
from gateway.sim.behaviour import Behaviour
from gateway.sim.llamacpp import LlamaCppDialect
from gateway.sim.ollama import OllamaDialect
from gateway.sim.openai import OpenAIDialect
from gateway.sim.slots import QueueFull
from gateway.sim.tgi import TGIDialect
from gateway.sim.wire import abort, record

Kind = Literal["ollama", "llamacpp", "tgi", "openai"]
_DIALECTS: dict[str, Callable[[Core], Dialect]] = {
    "ollama": OllamaDialect,
    "llamacpp": LlamaCppDialect,
    "tgi": TGIDialect,
    "openai": OpenAIDialect,
}
# stop() must not wait on streams parked by `stall_after`; they are cancelled instead.
_SHUTDOWN_TIMEOUT = 0.1
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeUpstream(Core):
    """A simulated upstream. Mutate `behaviour` between requests to inject faults.

    `slots`: how many generations run at once (llama-server `--parallel`,
    OLLAMA_NUM_PARALLEL); the rest wait in a FIFO queue, and their wait is part of their
    time to first token. None: no limit. `queue_limit` (Ollama only, its
    OLLAMA_MAX_QUEUE): when that many already wait, a newcomer gets Ollama's 503.
    `loaded` (Ollama only): the models `/api/ps` lists as in memory at start (None:
    every installed model); a generation loads its model.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        models: Sequence[str] = ("llama2",),
        text: str | None = None,
        behaviour: Behaviour | None = None,
        name: str | None = None,
        api_key: str | None = None,
        slots: int | None = None,
        queue_limit: int | None = None,
        loaded: Sequence[str] | None = None,
    ) -> None:
        if kind not in _DIALECTS:
            raise ValueError(f"unknown upstream kind {kind!r}")
        if kind != "ollama" and (queue_limit is not None or loaded is not None):
            # Silently ignored knobs would make a test pass for the wrong reason.
            raise ValueError("queue_limit and loaded are Ollama's (OLLAMA_MAX_QUEUE, /api/ps)")
        super().__init__(
            kind,
            models,
            text,
            behaviour,
            api_key,
            slots=slots,
            queue_limit=queue_limit,
            loaded=loaded,
        )
        self.name = name or kind
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"
        self.dialect = _DIALECTS[kind](self)
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 << 20)
        self.app.add_routes(self.dialect.routes())
        self._runner: web.AppRunner | None = None
        # What kill() cut: generations running and waiting at that moment.
        self.killed_active: int | None = None
        self.killed_waiting: int | None = None

    def __repr__(self) -> str:
        return f"<FakeUpstream {self.name} {self.kind} {self.url()}>"

    def url(self, path: str = "") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        # handler_cancellation: a client disconnect cancels the handler at once, which
        # is how the streaming loop notices (and counts) cancelled streams.
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.stopping = False
        self.host = host
        self.port = runner.addresses[0][1]
        self.scheme = "https" if ssl_context is not None else "http"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self.stopping = True
            await runner.cleanup()

    async def kill(self) -> None:
        """Die like a crashed server: stop listening, then drop every open connection
        at once (no response end, no FIN first). Running and queued generations are
        cut; new connections are refused. Not restartable: make a new one."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        self.stopping = True  # the streams cut here were not abandoned by their client
        self.killed_active, self.killed_waiting = self.busy, self.waiting
        for site in list(runner.sites):
            await site.stop()
        server = runner.server
        if server is not None:
            for handler in server.connections:
                if handler.transport is not None:
                    handler.transport.abort()
        await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _unauthorized(self, request: web.Request) -> bool:
        if self.api_key is None or request.path in self.dialect.public_paths:
            return False
        return request.headers.get("Authorization") != f"Bearer {self.api_key}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        await record(request, self.received)
        generation = request.method not in ("GET", "HEAD")
        b = self.behaviour
        if generation and b.drop_connection:
            return abort(request)
        if generation and b.delay > 0:
            await asyncio.sleep(b.delay)
        if self._unauthorized(request):
            return self.dialect.unauthorized()
        if generation and b.status is not None:
            if b.error_body is not None:
                return web.Response(
                    body=b.error_body,
                    status=b.status,
                    headers={"Content-Type": "application/json"},
                )
            return self.dialect.status_error(b.status, self.dialect.model_of(request))
        if generation and (refusal := self.dialect.unavailable()) is not None:
            return refusal
        try:
            return await handler(request)
        except QueueFull:
            return self.dialect.queue_full(request)
