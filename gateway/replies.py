"""Gateway-made answers as aiohttp responses (the bytes come from `errors`)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .errors import error_body


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(message), content_type="application/json", headers=headers
    )
