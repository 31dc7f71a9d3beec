"""The status listeners' runner: an aiohttp application (the status routes) served by
the proxy listener's connection class, so that idle or slow clients cannot use up the
port that probes and scrapes need (docs/operations.md, "Client limits")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .clientconn import ClientServer
from .clientreq import ProxyRequest


class LimitedAppRunner(web.AppRunner):
    """An application (a status listener's) served by a `ClientServer`: the proxy
    listener's client limits, so that idle or slow clients cannot use up the port that
    probes and scrapes need. Its refusals are answered but not counted (the counter is
    the proxy listener's)."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        keepalive_timeout: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._limits = (header_timeout, keepalive_timeout, max_connections)

    async def _make_server(self) -> web.Server:
        await super()._make_server()  # the app's startup and freeze (its server unused)
        header, keepalive, most = self._limits
        handle = self.app._handle

        async def dispatch(request: ProxyRequest) -> web.StreamResponse:
            if request.refusal is not None:  # refused before any route (clientreq.screen)
                return request.refusal
            return await handle(request)

        return ClientServer(
            dispatch,
            header_timeout=header,
            body_timeout=header,  # status routes take no body
            keepalive_timeout=keepalive,
            max_connections=most,
            count=lambda reason: None,
            **self._kwargs,
        )
