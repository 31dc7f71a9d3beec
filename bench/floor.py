"""The floor: the least an aiohttp reverse proxy can do, for comparison with the gateway.

    python bench/floor.py --port PORT --upstream http://127.0.0.1:UPORT [--uvloop]

One `ClientSession` with keep-alive (no pool limit), every request forwarded to
`<upstream><same path>` with its body; the answer's status, Content-Type and body go
back. No parsing, no routing, no logging. When the upstream answers with a body length
the answer is read whole and returned (non-stream floor); when it streams (chunked,
no length) each piece is relayed as it arrives (streaming floor).
"""

from __future__ import annotations

import argparse
import asyncio
import resource

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = await request.read()
    async with session.post(
        request.app[UPSTREAM] + request.path,
        data=body,
        headers={"Content-Type": "application/json"},
    ) as up:
        ctype = up.headers.get("Content-Type", "application/json")
        if up.content_length is not None:
            return web.Response(
                status=up.status, body=await up.read(), headers={"Content-Type": ctype}
            )
        resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    yield
    await app[SESSION].close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop (must be installed)")
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.uvloop:
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("POST", "/{tail:.*}", proxy)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        backlog=4096,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
