"""GET over a worker's private status socket: the supervisor's only client.

A few lines instead of an HTTP client: one GET with `Connection: close`, read to EOF,
from our own aiohttp status app, which answers with a Content-Length body.
"""

from __future__ import annotations

import asyncio
import contextlib


async def get(socket_path: str, target: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of `GET target`; raises OSError or TimeoutError."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise OSError(f"no HTTP answer from {socket_path}")
        return int(head[9:12]), body

    return await asyncio.wait_for(go(), timeout)
