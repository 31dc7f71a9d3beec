"""A recording pass-through between the gateway and a real server.

The gateway talks to the tap; the tap forwards each request unchanged to the real
server and relays the answer chunk by chunk as it arrives, keeping both sides' bytes
so a test can check exactly what went over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Exchange:
    method: str
    path: str
    request: bytes
    status: int = 0
    response: bytes = b""
    chunks: list[bytes] = field(default_factory=list)


class Tap:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def generations(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST"]

    async def start(self) -> Tap:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        ex = Exchange(request.method, request.path_qs, body)
        self.exchanges.append(ex)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            ex.status = upstream.status
            out = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                ex.chunks.append(chunk)
                ex.response += chunk
                await out.write(chunk)
            await out.write_eof()
            return out
