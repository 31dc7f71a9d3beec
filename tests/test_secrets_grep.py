"""No secret leaves the gateway: a real `llama-gateway serve` process with every kind of
secret configured (target auth in a header, the query and the body; consumer keys; a
Redis password) and an upstream that echoes the request back in its error pages. Every
output channel is collected and grepped: answers (status line, headers, bodies), the
process log (stderr), the access log with both payloads (stdout), /metrics, /status,
/openapi.json, and `llama-gateway check` on the config and on a broken copy of it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from aiohttp import web
from helpers import route, target
from redis_kit import RedisServer, needs_redis
from test_process import launch

pytestmark = needs_redis

HEADER_SECRET = "hdr-S3cret-0001"
QUERY_SECRET = "q/S3cret+0002 &x"  # needs URL-encoding: the echo shows it encoded
BODY_SECRET = 'body-S3cret-"0003"'  # needs JSON-escaping: the echo shows it escaped
CONSUMER_KEY = "consumer-S3cret-0004"
CLIENT_AUTH = "client-own-S3cret-0005"  # an SDK's key for some other service
REDIS_PASSWORD = "redis-S3cret-0006"
SECRETS = [HEADER_SECRET, QUERY_SECRET, BODY_SECRET, CONSUMER_KEY, CLIENT_AUTH, REDIS_PASSWORD]
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def forms(secret: str) -> set[str]:
    """The ways a secret can show up in text: as is, URL-encoded, JSON-escaped."""
    return {secret, quote(secret, safe=""), quote(secret), secret.replace('"', '\\"')}


@pytest.fixture
async def echo_upstream() -> AsyncIterator[str]:
    """Answers 401 and 500 pages that repeat the whole request (as many servers do)."""

    async def echo(request: web.Request) -> web.Response:
        head = f"{request.method} {request.path_qs}\n" + "".join(
            f"{k}: {v}\n" for k, v in request.headers.items()
        )
        body = await request.text()
        status = 401 if "unauthorized" in request.path else 500
        return web.Response(status=status, text=f"you sent:\n{head}\n{body}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _config(echo: str, ok_url: str, redis_url: str) -> dict:
    logging_cfg = {"logging": {"log_statistics": True, "log_payloads": True}}
    auth_header = {"auth": {"header_name": "X-Upstream-Key", "header_value": HEADER_SECRET}}
    auth_query = {
        "auth": {"param_name": "key", "param_value": QUERY_SECRET, "param_location": "query"}
    }
    auth_body = {
        "auth": {"param_name": "api_key", "param_value": BODY_SECRET, "param_location": "body"}
    }
    routes = []
    for i, (auth, path) in enumerate(
        [(auth_header, "/unauthorized"), (auth_query, "/error"), (auth_body, "/error")]
    ):
        t = target(f"{echo}{path}", "", fmt="openai", **auth, **logging_cfg)
        r = route(t, path=f"/echo{i}", name=f"echo{i}", balancer={"retries": 0})
        # echo1 lets the client's key through: the echo of it must be redacted.
        r["key_auth"] = {"hide_credentials": i != 1}
        r["rate_limiting"] = {
            "limits": [{"requests": 1000, "window": 60}],
            "strategy": "redis",
            "redis": {"url": redis_url},
        }
        routes.append(r)
    ok = target(ok_url, "", fmt="ollama", **auth_header, **logging_cfg)
    routes.append(route(ok, path="/ok", name="ok") | {"key_auth": {}})
    return {
        "server": {"port": 0, "status_port": 0, "drain_timeout": 1},
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": CONSUMER_KEY}]}],
        "routes": routes,
    }


async def _run(*args: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return out.decode(errors="replace")


async def test_no_secret_in_any_output_channel(tmp_path: Path, echo_upstream: str, upstream):
    redis = RedisServer(tmp_path, password=REDIS_PASSWORD)
    await redis.start()
    ok_up = await upstream("ollama")
    cfg_path = tmp_path / "gw.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(echo_upstream, ok_up.url("/api/chat"), redis.url)))
    env = {**os.environ, "LLAMA_GATEWAY_LOG_FORMAT": "json", "LLAMA_GATEWAY_LOG_LEVEL": "debug"}
    seen: list[str] = []  # every byte any channel produced

    gw = await launch("serve", "--config", str(cfg_path), env=env, stdout=asyncio.subprocess.PIPE)
    proc, port, status_port = gw.proc, gw.port, gw.status_port
    assert proc.stderr is not None and proc.stdout is not None
    stderr = gw.startup
    try:
        client_headers = {"apikey": CONSUMER_KEY, "Authorization": f"Bearer {CLIENT_AUTH}"}
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            requests = [("/echo0", {}), ("/echo1", {}), ("/echo2", {}), ("/ok", {})]
            requests += [("/echo0", {"stream": True}), ("/ok", {"stream": True})]
            for path, extra in requests:
                for headers in (client_headers, {"Authorization": f"Bearer {CONSUMER_KEY}"}):
                    async with http.post(
                        base + path + "?q=1", json={**CHAT, **extra}, headers=headers
                    ) as resp:
                        seen.append(f"{resp.status} {resp.reason}")
                        seen.extend(f"{k}: {v}" for k, v in resp.headers.items())
                        seen.append(await resp.text())
            # Refusals: a wrong key, no key.
            for headers in ({"apikey": "wrong-" + CONSUMER_KEY}, {}):
                async with http.post(base + "/ok", json=CHAT, headers=headers) as resp:
                    assert resp.status == 401
                    seen.append(await resp.text())
            status = f"http://127.0.0.1:{status_port}"
            for path in ("/metrics", "/status", "/openapi.json"):
                async with http.get(status + path) as resp:
                    assert resp.status == 200
                    seen.append(await resp.text())
        # Redis goes away: the store_down event must not show the URL's password.
        await redis.stop()
        async with (
            aiohttp.ClientSession() as http,
            http.post(base + "/echo1", json=CHAT, headers=client_headers) as resp,
        ):
            seen.append(await resp.text())
    finally:
        proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        await redis.stop()
    seen += [stderr.decode(), err.decode(), out.decode()]
    access = out.decode()
    assert '"payload"' in access or "payload" in access, "the access log logged no payloads"
    assert "you sent" in "".join(seen), "the upstream's echo did not reach the client"

    checked = await _run("check", "--config", str(cfg_path), env=env)
    assert "1 consumer(s), key-auth on 4 route(s), rate limits on 3 route(s)" in checked
    seen.append(checked)
    broken = yaml.safe_load(cfg_path.read_text())
    broken["routes"][0]["config"]["targets"][0]["auth"]["header_value"] = HEADER_SECRET + "\x01"
    broken["consumers"][0]["keyauth_credentials"].append({"key": CONSUMER_KEY})  # duplicate
    broken["routes"][0]["rate_limiting"]["redis"]["url"] = f"redis://:{REDIS_PASSWORD}@/x:y"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    checked = await _run("check", "--config", str(tmp_path / "broken.yaml"), env=env)
    assert "header_value" in checked and "keyauth_credentials" in checked
    seen.append(checked)

    text = "\n".join(seen)
    assert "[redacted]" in text, "no echo carried a secret: the test proves nothing"
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text, f"secret {secret!r} leaked as {form!r}"
