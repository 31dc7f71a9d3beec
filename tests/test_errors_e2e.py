"""Gateway-made and passed-through error answers, each text exact, over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url

from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]


async def post(
    http: aiohttp.ClientSession, u: str, body: Any = None, **kw: Any
) -> tuple[int, Any, Any]:
    async with http.post(u, json=body, **kw) if body is not None else http.post(u, **kw) as r:
        data = await r.json(content_type=None)
        return r.status, data, r.headers


def msg(data: Any) -> str:
    return data["error"]["message"]


async def test_unknown_path_404(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    status, data, headers = await post(http, url(gw, "/nope"), {"messages": CHAT})
    assert (status, data) == (404, {"error": {"message": "no route matched"}})
    assert headers["Content-Type"] == "application/json"


async def test_body_too_large_is_413(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), max_request_body_size=200))
    big = {"messages": [{"role": "user", "content": "x" * 300}]}
    status, data, _ = await post(http, url(gw), big)
    assert (status, msg(data)) == (413, "request body is too large")
    # exactly at the limit is fine
    small = {"messages": [{"role": "user", "content": "y"}]}
    status, _, _ = await post(http, url(gw), small)
    assert status == 200
    assert len(up.generation_requests()) == 1


async def test_invalid_prompts(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    bad_bodies: list[Any] = [
        b"not json",
        b"[1, 2]",
        b"",
        {"messages": []},
        {"messages": "hi"},
        {"prompt": None},
        {"prompt": 5},
        {"model": "llama2"},
    ]
    for body in bad_bodies:
        kw = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with http.post(url(gw), **kw) as r:
            assert r.status == 400, body
            assert await r.json() == {
                "error": {"message": "request body doesn't contain valid prompts"}
            }
    assert up.generation_requests() == []


async def test_format_conflicts(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat")),
        route(
            target(up, "/api/generate", route_type="llm/v1/completions"), path="/complete", name="c"
        ),
    )
    status, data, _ = await post(http, url(gw), {"messages": CHAT, "prompt": "x"})
    assert (status, msg(data)) == (400, "request matches multiple LLM request formats")
    status, data, _ = await post(http, url(gw), {"prompt": "x"})
    assert (
        msg(data)
        == "[llm/v1/completions] message format is not compatible with [llm/v1/chat] route type"
    )
    status, data, _ = await post(http, url(gw, "/complete"), {"messages": CHAT})
    assert (
        msg(data)
        == "[llm/v1/chat] message format is not compatible with [llm/v1/completions] route type"
    )


async def test_content_type_does_not_bypass_checks(upstream, gateway, http) -> None:
    """Kong#14536: a body without Content-Type: application/json skipped the model check."""
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    raw = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": ctype} if ctype else {}
        async with http.post(url(gw), data=raw, headers=headers) as r:
            assert r.status == 400
            assert await r.json() == {
                "error": {"message": "cannot use own model - must be: llama2"}
            }
    async with http.post(
        url(gw), data=b'{"prompt": "x"}', headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 400
    assert up.generation_requests() == []


async def test_model_rules(upstream, gateway, http) -> None:
    up = await upstream("ollama", models=("llama2", "mistral", "codellama"))
    gw = await gateway(
        route(
            target(up, "/api/chat", name="llama2"),
            target(up, "/api/chat", name="mistral"),
            path="/two",
        ),
        route(target(up, "/api/chat", name=None), path="/free", name="free"),
    )
    status, data, _ = await post(http, url(gw, "/two"), {"model": "gpt-4", "messages": CHAT})
    assert (status, msg(data)) == (400, "cannot use own model - must be one of: llama2, mistral")
    status, data, _ = await post(http, url(gw, "/two"), {"model": ["x"], "messages": CHAT})
    assert msg(data) == "cannot use own model - must be one of: llama2, mistral"
    status, data, _ = await post(http, url(gw, "/free"), {"messages": CHAT})
    assert (status, msg(data)) == (
        400,
        "model parameter not found in request, nor in gateway configuration",
    )
    status, data, _ = await post(http, url(gw, "/free"), {"model": None, "messages": CHAT})
    assert msg(data) == "model parameter not found in request, nor in gateway configuration"
    status, data, headers = await post(
        http, url(gw, "/free"), {"model": "codellama", "messages": CHAT}
    )
    assert status == 200 and headers["X-Kong-LLM-Model"] == "llama2/codellama"
    assert up.generation_requests()[-1].json["model"] == "codellama"


async def test_streaming_denied(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), response_streaming="deny"))
    status, data, _ = await post(http, url(gw), {"messages": CHAT, "stream": True})
    assert (status, msg(data)) == (400, "response streaming is not enabled for this LLM")
    status, data, _ = await post(http, url(gw), {"messages": CHAT, "stream": False})
    assert status == 200


async def test_untransformable_request(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    body = {"messages": [{"role": "user", "content": 42}]}
    status, data, _ = await post(http, url(gw), body)
    # Kong's text, then the adapter's reason naming the field.
    assert (status, msg(data)) == (
        400,
        "error transforming to llama2://llm/v1/chat/ollama: messages[0]: content must be "
        "a string or a list of text parts",
    )
    assert up.generation_requests() == []


async def test_untransformable_here_and_unavailable_there_is_503(upstream, gateway, http) -> None:
    """A request only the open-circuit target could carry gets 503 + Retry-After (the
    service is unavailable), not the 400 meant for requests no target can carry."""
    up = await upstream("ollama")
    dead = f"http://127.0.0.1:{_closed_port()}/v1/chat/completions"
    gw = await gateway(
        route(
            target(up, "/api/chat"),
            target(dead, "", fmt="openai"),
            balancer={"max_fails": 1, "fail_timeout": 30000, "retries": 1},
        )
    )
    dead_state = gw.router.routes[0].targets[1].state
    for _ in range(4):  # round-robin reaches the dead target within two requests
        status, _, _ = await post(http, url(gw), {"messages": CHAT})
        assert status == 200
        if dead_state.open_until:
            break
    assert dead_state.open_until, "the dead target's circuit should be open"
    body = {"messages": [{"role": "user", "content": 42}]}  # ollama cannot carry this
    status, data, headers = await post(http, url(gw), body)
    assert status == 503 and msg(data).startswith("no healthy targets for route"), data
    assert int(headers["Retry-After"]) >= 1


async def test_upstream_non_200_passed_through_in_openai_shape(upstream, gateway, http) -> None:
    """Status kept; Ollama's `{"error": "…"}` becomes OpenAI's error object, so OpenAI
    clients read `error.message`; the upstream's own bytes stay in the access log."""
    up = await upstream("ollama", models=("llama2",))
    gw = await gateway(route(target(up, "/api/chat", name=None)))
    async with http.post(url(gw), json={"model": "nope", "messages": CHAT}) as r:
        assert r.status == 404
        assert r.content_type == "application/json"
        assert await r.json() == {
            "error": {
                "message": "model 'nope' not found",
                "type": "not_found_error",
                "code": None,
            }
        }
        assert r.headers["X-Gateway-Attempts"] == "1"
    state = gw.router.routes[0].targets[0].state
    assert (state.requests, state.failures) == (1, 0), "a client-caused 404 is no target failure"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # TGI: error_type becomes the code
        (
            422,
            b'{"error":"Input validation error: bad","error_type":"validation"}',
            {
                "message": "Input validation error: bad",
                "type": "invalid_request_error",
                "code": "validation",
            },
        ),
        # an HTML page from a proxy in front of the server
        (
            502,
            b"<html><body>Bad Gateway</body></html>",
            {
                "message": "<html><body>Bad Gateway</body></html>",
                "type": "server_error",
                "code": None,
            },
        ),
        # an empty body still says something
        (503, b"", {"message": "upstream answered 503", "type": "server_error", "code": None}),
    ],
)
async def test_upstream_error_bodies_reshaped(
    upstream, gateway, http, status: int, body: bytes, expected: dict
) -> None:
    up = await upstream("tgi", behaviour=Behaviour(status=status, error_body=body))
    gw = await gateway(route(target(up, "/generate", fmt="raw")))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == status
        assert await r.json() == {"error": expected}


async def test_openai_shaped_upstream_error_passes_byte_for_byte(upstream, gateway, http) -> None:
    body = b'{"error":{"code":500,"message":"boom","type":"server_error"}}'
    up = await upstream("llamacpp", behaviour=Behaviour(status=500, error_body=body))
    t = target(up, "/completion", fmt="raw", options={"raw_flavor": "llamacpp"})
    gw = await gateway(route(t))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert (r.status, await r.read()) == (500, body)


async def test_unreadable_200_is_500(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    # An openai-format target pointed at Ollama's native API gets a 200 without `choices`.
    gw = await gateway(route(target(up, "/api/chat", fmt="openai")))
    status, data, _ = await post(http, url(gw), {"messages": CHAT})
    assert (status, msg(data)) == (
        500,
        "transformation failed from type llama2://llm/v1/chat: 'choices' not in llm/v1/chat response",
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connect_failure_is_502_with_target_name(gateway, http) -> None:
    port = _closed_port()
    t = target(
        f"http://127.0.0.1:{port}/api/chat",
        "",
        auth={"header_name": "Authorization", "header_value": "Bearer sekrit"},
    )
    gw = await gateway(route(t, balancer={"retries": 2}))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 502
        text = await r.text()
        assert await r.json() == {
            "error": {"message": f"upstream unavailable: llama2@127.0.0.1:{port}"}
        }
        assert "sekrit" not in text
        assert r.headers["X-Gateway-Attempts"] == "3", "first attempt + 2 retries"


async def test_read_timeout_is_504(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(delay=5.0))
    gw = await gateway(route(target(up, "/api/chat"), balancer={"read_timeout": 200}))
    status, data, headers = await post(http, url(gw), {"messages": CHAT})
    assert (status, msg(data)) == (504, f"upstream timed out: llama2@127.0.0.1:{up.port}")
    # A read timeout after the request was sent is not retried without non_idempotent.
    assert headers["X-Gateway-Attempts"] == "1"


async def test_write_timeout_is_504(gateway, http) -> None:
    """An upstream that accepts but never reads: once the socket buffers are full the
    request cannot be sent, and `write_timeout` ends the attempt. Deterministic: the
    upstream's receive buffer is pinned small, and the body is larger than twice the
    biggest send buffer the kernel may give the gateway's socket; nothing ever reads."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # inherited on accept
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(never_read, sock=sock)
    port = server.sockets[0].getsockname()[1]
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 * 1024 * 1024
    size = 8 * 1024 * 1024 + 2 * wmem_max
    try:
        gw = await gateway(
            route(
                target(f"http://127.0.0.1:{port}/api/chat", ""),
                balancer={"write_timeout": 300, "read_timeout": 60000},
                max_request_body_size=size + 1024,
            )
        )
        body = {"messages": [{"role": "user", "content": "x" * size}]}
        status, data, _ = await asyncio.wait_for(post(http, url(gw), body), 30)
        assert (status, msg(data)) == (504, f"upstream timed out: llama2@127.0.0.1:{port}")
        assert accepted, "the upstream saw the connection"
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_client_leaving_a_non_stream_closes_the_upstream_request(gateway) -> None:
    """The client disconnects while the upstream is still generating a non-streamed
    answer: the gateway drops the upstream connection at once (the upstream sees EOF and
    can stop), keeps nothing busy, and counts the request as cancelled."""
    got_request = asyncio.Event()
    upstream_saw_eof = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        try:
            while await reader.read(65536):  # never answers; waits for the close
                pass
        except ConnectionError:
            pass
        upstream_saw_eof.set()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(route(target(f"http://127.0.0.1:{port}/api/chat", "")))
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        body = json.dumps({"messages": CHAT}).encode()
        writer.write(
            b"POST /chat HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await asyncio.wait_for(got_request.wait(), 5)
        writer.close()  # the client gives up
        await asyncio.wait_for(upstream_saw_eof.wait(), 5)
        pool = gw.gateway.pool  # type: ignore[union-attr]
        for _ in range(1000):  # a bound on waiting, not a timing assertion
            if not pool._busy and not gw.gateway.in_flight:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        assert not pool._busy and not any(pool._idle.values())
        text = gw.metrics.exposition().decode()
        cancelled = [
            line
            for line in text.splitlines()
            if line.startswith("llama_gateway_requests_total{") and 'outcome="cancelled"' in line
        ]
        assert cancelled and cancelled[0].endswith(" 1.0"), cancelled
    finally:
        server.close()
        await server.wait_closed()


async def test_no_healthy_targets_is_503_with_retry_after(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), name="pool"))
    for t in gw.router.routes[0].targets:
        t.state.healthy = False
    status, data, headers = await post(http, url(gw), {"messages": CHAT})
    assert (status, msg(data)) == (503, "no healthy targets for route pool")
    assert int(headers["Retry-After"]) >= 1


async def test_retry_after_counts_down_to_the_earliest_reopening(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), target(up, "/api/chat"), name="pool"))
    now = gw.clock()
    a, b = gw.router.routes[0].targets
    a.state.open_until = now + 42.2
    b.state.open_until = now + 7.5
    status, _, headers = await post(http, url(gw), {"messages": CHAT})
    assert status == 503 and headers["Retry-After"] == "8"


async def test_unexpected_error_is_a_json_500(upstream, gateway, http, monkeypatch) -> None:
    up = await upstream("ollama")
    gw = await gateway(
        route(target(up, "/api/chat", auth={"header_name": "X-Key", "header_value": "sekrit"}))
    )

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(gw.router.routes[0].targets[0].adapter, "build", boom)
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 500
        assert await r.json() == {"error": {"message": "internal gateway error"}}
    assert gw.gateway is not None and gw.gateway.in_flight == 0


async def test_unreadable_200_fails_over_with_invalid_header(upstream, gateway, http) -> None:
    wrong = await upstream("ollama")
    good = await upstream("openai")
    gw = await gateway(
        route(
            target(wrong, "/api/chat", fmt="openai", weight=100),  # answers 200 without `choices`
            target(good, "/v1/chat/completions", fmt="openai", weight=1),
            balancer={"failover_criteria": ["invalid_header"]},
        )
    )
    status, data, headers = await post(http, url(gw), {"messages": CHAT})
    assert status == 200 and headers["X-Gateway-Attempts"] == "2", data


async def test_last_failure_wins_over_an_earlier_passthrough(upstream, gateway, http) -> None:
    busy = await upstream("ollama", behaviour=Behaviour(status=503))
    gw = await gateway(
        route(
            target(busy, "/api/chat", weight=100),
            target(f"http://127.0.0.1:{_closed_port()}/api/chat", "", weight=1),
            balancer={"failover_criteria": ["error", "http_503"], "retries": 1},
        )
    )
    status, data, headers = await post(http, url(gw), {"messages": CHAT})
    assert status == 502 and msg(data).startswith("upstream unavailable: llama2@127.0.0.1:")
    assert headers["X-Gateway-Attempts"] == "2"


async def test_connection_closed_before_answer_is_retried_once_uncounted(gateway, http) -> None:
    """A stale keep-alive connection (closed by the upstream while idle) is no target
    failure; a close on a fresh connection is, and is never sent twice."""
    from aiohttp import web

    calls = {"n": 0, "drop_all": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        await request.read()
        if calls["drop_all"] or calls["n"] % 2 == 0:  # close without answering
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        return web.json_response(
            {
                "model": "llama2",
                "message": {"role": "assistant", "content": "ok"},
                "done": True,
                "done_reason": "stop",
            }
        )

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream_url = f"http://127.0.0.1:{port}/api/chat"
    try:
        gw = await gateway(route(target(upstream_url, "", weight=1), balancer={"retries": 0}))
        for _ in range(3):  # the 1st opens a connection; later ones reuse the pooled one
            status, data, headers = await post(http, url(gw), {"messages": CHAT})
            assert status == 200 and data["choices"][0]["message"]["content"] == "ok"
            assert headers["X-Gateway-Attempts"] == "1"
        assert calls["n"] == 5  # two stale connections, each resent once
        calls["drop_all"] = 1
        fresh = await gateway(route(target(upstream_url, "", weight=1), balancer={"retries": 0}))
        before = calls["n"]
        status, _, _ = await post(http, url(fresh), {"messages": CHAT})
        assert status == 502 and calls["n"] == before + 1
    finally:
        await runner.cleanup()


async def test_upstream_redirect_is_passed_through_not_followed(gateway, http) -> None:
    """Following a 3xx would send our auth header to whatever host the upstream names."""
    from aiohttp import web

    stolen: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{request.url.port}/steal")

    async def steal(request: web.Request) -> web.Response:
        stolen.append(request.headers.get("X-Api-Key", ""))
        return web.json_response({"stolen": True})

    app = web.Application()
    app.router.add_post("/api/chat", redirect)
    app.router.add_route("*", "/steal", steal)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        t = target(
            f"http://127.0.0.1:{port}/api/chat",
            "",
            auth={"header_name": "X-Api-Key", "header_value": "SEKRET"},
        )
        gw = await gateway(route(t))
        async with http.post(url(gw), json={"messages": CHAT}, allow_redirects=False) as r:
            assert r.status == 307
        assert stolen == []
    finally:
        await runner.cleanup()


async def test_decoder_failure_mid_stream_ends_with_one_error_event(gateway, http) -> None:
    """A frame the decoder chokes on must not corrupt the committed SSE response."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(
            b'{"model":"llama2","message":{"role":"assistant","content":"Hi"},"done":false}\n'
        )
        await asyncio.sleep(0.3)  # let the first event reach the client first
        await resp.write(
            b'{"model":"llama2","message":{"role":"assistant","content":"x","tool_calls":5},"done":false}\n'
        )
        await resp.write(
            b'{"model":"llama2","message":{"role":"assistant","content":""},"done":true}\n'
        )
        return resp

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        gw = await gateway(route(target(f"http://127.0.0.1:{port}/api/chat", "")))
        async with http.post(url(gw), json={"messages": CHAT, "stream": True}) as r:
            assert r.status == 200
            raw = (await r.read()).decode()
        assert "HTTP/1.1" not in raw
        events = [e for e in raw.split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events)
        assert '"Hi"' in events[0]
        assert "[DONE]" not in raw and json.loads(events[-1][6:])["error"]["message"]
    finally:
        await runner.cleanup()


async def test_model_with_control_characters_is_refused(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat", name=None)))
    status, data, _ = await post(http, url(gw), {"model": "x\r\nSet-Cookie: a=b", "messages": CHAT})
    assert (status, msg(data)) == (
        400,
        "model parameter not found in request, nor in gateway configuration",
    )
    assert up.generation_requests() == []


async def test_adapter_bug_is_logged_and_not_held_against_the_target(
    upstream, gateway, http, monkeypatch, caplog
) -> None:
    """An exception an adapter must never raise is our bug: the client gets the same
    500 as for an unreadable answer, the log names the target, the metrics count a
    gateway error, and the target's failures and breaker are untouched."""
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), balancer={"max_fails": 1}))
    t = gw.router.routes[0].targets[0]

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("message")

    monkeypatch.setattr(t.adapter, "parse", boom)
    with caplog.at_level("ERROR", logger="llama_gateway"):
        status, data, _ = await post(http, url(gw), {"messages": CHAT})
    assert (status, msg(data)) == (
        500,
        "transformation failed from type llama2://llm/v1/chat: unexpected response shape",
    )
    assert any(t.name in r.getMessage() and r.exc_info for r in caplog.records)
    assert t.state.failures == 0 and t.state.requests == 1 and t.state.in_flight == 0
    assert t.state.breaker == "closed"
    text = await (await http.get(f"http://127.0.0.1:{gw.status_port}/metrics")).text()
    assert 'outcome="gateway_error",status_class="5xx"} 1.0' in text
    assert not [
        ln
        for ln in text.splitlines()
        if ln.startswith("llama_gateway_upstream_errors_total{") and not ln.endswith(" 0.0")
    ]


async def test_stream_decoder_bug_before_the_first_event(
    upstream, gateway, http, monkeypatch, caplog
) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat")))
    t = gw.router.routes[0].targets[0]
    real = t.adapter.decoder

    def broken(*args: Any, **kwargs: Any) -> Any:
        d = real(*args, **kwargs)

        def feed(data: bytes) -> list[bytes]:
            raise TypeError("bug")

        d.feed = feed  # type: ignore[method-assign]
        return d

    monkeypatch.setattr(t.adapter, "decoder", broken)
    with caplog.at_level("ERROR", logger="llama_gateway"):
        status, data, _ = await post(http, url(gw), {"messages": CHAT, "stream": True})
    assert status == 500 and msg(data).startswith("transformation failed")
    assert any(t.name in r.getMessage() for r in caplog.records)
    assert t.state.failures == 0 and t.state.in_flight == 0


async def test_a_501_counts_everywhere_like_a_500(upstream, gateway, http) -> None:
    """One rule for a target failure: /status, the breaker and the error metric agree."""
    up = await upstream("ollama", behaviour=Behaviour(status=501))
    gw = await gateway(route(target(up, "/api/chat"), balancer={"max_fails": 1}))
    status, _, _ = await post(http, url(gw), {"messages": CHAT})
    assert status == 501  # passed through
    t = gw.router.routes[0].targets[0]
    assert t.state.failures == 1 and t.state.breaker == "open"
    text = await (await http.get(f"http://127.0.0.1:{gw.status_port}/metrics")).text()
    assert (
        f'llama_gateway_upstream_errors_total{{route="r",target="{t.name}",reason="status"}} 1.0'
        in text
    )


async def test_requests_that_cannot_be_serialised_leave_no_pick_behind(
    upstream, gateway, http
) -> None:
    """A body nested deeper than orjson writes is refused before any pick (400, see
    test_faults.py); a tuning value the raw adapter cannot compare ends as our 500. No
    pick is leaked either way."""
    openai_up = await upstream("openai")
    raw_up = await upstream("tgi")
    gw = await gateway(
        route(target(openai_up, "/v1/chat/completions", fmt="openai"), path="/o", name="o"),
        route(
            target(raw_up, "/generate", fmt="raw", route_type="llm/v1/completions"),
            path="/r",
            name="raw",
        ),
    )
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    for path, body, answer in (
        (
            "/o",
            {"messages": CHAT, "x": deep},
            (400, "request body is nested too deeply (limit 128)"),
        ),
        ("/r", {"prompt": "p", "temperature": "warm"}, (500, "internal gateway error")),
    ):
        for _ in range(3):
            status, data, _ = await post(http, url(gw, path), body)
            assert (status, msg(data)) == answer
    for r in gw.router.routes:
        s = r.targets[0].state
        assert (s.in_flight, s.requests, s.failures) == (0, 0, 0)
