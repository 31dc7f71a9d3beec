"""Shared fixtures: real fake upstreams and a real gateway, all on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.config import parse
from gateway.server import GatewayServer
from gateway.sim import FakeUpstream

UpstreamFactory = Callable[..., Awaitable[FakeUpstream]]
GatewayFactory = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamFactory]:
    started: list[FakeUpstream] = []

    async def make(kind: str = "ollama", **kwargs: Any) -> FakeUpstream:
        up = FakeUpstream(kind, **kwargs)  # type: ignore[arg-type]
        await up.start()
        started.append(up)
        return up

    yield make
    for up in started:
        await up.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayFactory]:
    servers: list[GatewayServer] = []

    async def make(
        *routes: dict[str, Any],
        server: dict[str, Any] | None = None,
        frontends: dict[str, Any] | None = None,
        consumers: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> GatewayServer:
        raw: dict[str, Any] = {
            "server": {"port": 0, "status_port": 0, **(server or {})},
            "routes": list(routes),
        }
        if frontends is not None:  # the model-addressed front doors (off unless set)
            raw["frontends"] = frontends
        if consumers is not None:  # key-auth's consumers
            raw["consumers"] = consumers
        gw = GatewayServer(parse(raw, {}), **kwargs)
        await gw.start()
        servers.append(gw)
        return gw

    yield make
    for gw in servers:
        if gw.ready:
            await gw.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
