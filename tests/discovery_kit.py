"""What the discovery tests share: a scriptable aiohttp server on 127.0.0.1 that answers
the GETs discovery makes (Ollama's /api/tags and /api/ps, OpenAI's /v1/models,
llama-server's /slots, /props and /metrics) and records them, answer builders in each
server's real shapes, a clock the test moves, and a `Lab` that closes what a test
started.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from balancers import TargetState
from gateway import jsonutil
from gateway.discovery import Discovery

SECRET = "sk-very-secret-123"

# An answer: a JSON-able value (200), raw bytes (200), (status, value), or "hang".
Answer = Any


class Clock:
    """The monotonic clock discovery stamps `signals_at` with; tests move it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def state(name: str = "t", capacity: int | None = None) -> TargetState:
    s = TargetState(index=0, name=name, weight=100)
    s.capacity = capacity
    return s


# -- answers in each server's shape ----------------------------------------------------


def ollama_tags(*names: str) -> dict[str, Any]:
    return {
        "models": [
            {"name": n, "model": n, "modified_at": "2024-05-01T10:00:00Z", "size": 1,
             "digest": "d", "details": {"format": "gguf", "family": "llama"}}
            for n in names
        ]
    }  # fmt: skip


def ollama_ps(*names: str) -> dict[str, Any]:
    return {
        "models": [
            {"name": n, "model": n, "size": 1, "digest": "d",
             "expires_at": "2099-01-01T00:00:00Z", "size_vram": 1}
            for n in names
        ]
    }  # fmt: skip


def openai_models(*ids: str, owned_by: str = "openai") -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 1, "owned_by": owned_by} for i in ids],
    }


def slots(*busy: bool) -> list[dict[str, Any]]:
    """llama-server's /slots: one entry per slot, `is_processing` each."""
    return [
        {"id": i, "id_task": -1, "n_ctx": 4096, "speculative": False, "is_processing": b,
         "params": {"n_predict": -1}, "next_token": {"has_next_token": b, "n_decoded": 0}}
        for i, b in enumerate(busy)
    ]  # fmt: skip


def props(total: int, sleeping: bool = False, **flags: bool) -> dict[str, Any]:
    """llama-server's /props (`flags`: endpoint_slots / endpoint_metrics, as current
    servers add them)."""
    return {
        "default_generation_settings": {"n_ctx": 4096, "params": {}},
        "total_slots": total,
        "model_path": "/models/m.gguf",
        "chat_template": "{{ messages }}",
        "build_info": "b1-test",
        "is_sleeping": sleeping,
        **flags,
    }


def metrics(processing: int, deferred: int) -> bytes:
    """llama-server's /metrics text (as with --metrics)."""
    lines = [
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.",
        "# TYPE llamacpp:prompt_tokens_total counter",
        "llamacpp:prompt_tokens_total 123",
        "# HELP llamacpp:requests_processing Number of requests processing.",
        "# TYPE llamacpp:requests_processing gauge",
        f"llamacpp:requests_processing {processing}",
        "# HELP llamacpp:requests_deferred Number of requests deferred.",
        "# TYPE llamacpp:requests_deferred gauge",
        f"llamacpp:requests_deferred {deferred}",
    ]
    return ("\n".join(lines) + "\n").encode()


NOT_SUPPORTED = (
    501,
    {"error": {"code": 501, "message": "This server does not support metrics endpoint. "
               "Start it with `--metrics`", "type": "not_supported_error"}},
)  # fmt: skip


class FakeServer:
    """Answers each GET from `answers` (path -> Answer; unknown paths 404) and records
    `(path with query, headers)` per request as it arrives."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = dict(answers)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # ends "hang" answers at stop()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p.split("?", 1)[0] == path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path_qs, dict(request.headers)))
        answer = self.answers.get(request.path, (404, {"error": "not found"}))
        if answer == "hang":
            await self._release.wait()
            return web.Response(status=503)
        status, value = answer if isinstance(answer, tuple) else (200, answer)
        if isinstance(value, bytes):
            return web.Response(status=status, body=value, content_type="text/plain")
        return web.Response(status=status, body=jsonutil.dumps(value), content_type="application/json")  # fmt: skip

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class Lab:
    """The fake servers and discoveries one test starts; `close()` stops them all."""

    def __init__(self) -> None:
        self.servers: list[FakeServer] = []
        self.discoveries: list[Discovery] = []
        self.clock = Clock()

    async def server(self, answers: dict[str, Answer]) -> FakeServer:
        srv = FakeServer(answers)
        await srv.start()
        self.servers.append(srv)
        return srv

    def discovery(self, **kwargs: Any) -> Discovery:
        kwargs.setdefault("clock", self.clock)
        kwargs.setdefault("wall", lambda: 1_700_000_000.0)
        kwargs.setdefault("timeout", 5.0)  # generous: only timeout tests reach theirs
        d = Discovery(**kwargs)
        self.discoveries.append(d)
        return d

    async def close(self) -> None:
        for d in self.discoveries:
            await d.stop()
        for srv in self.servers:
            await srv.stop()
