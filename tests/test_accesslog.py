"""Structured access log (opt-in per target) and secrets never showing anywhere."""

from __future__ import annotations

import json

from helpers import LONG_WINDOW, route, target, url
from log_kit import capture_access_log

CHAT = [{"role": "user", "content": "hello there"}]
SECRET = "sk-very-secret-value"
PARAM_SECRET = "param-secret-value"


async def test_log_statistics_and_payloads(upstream, gateway, http) -> None:
    buf = capture_access_log()
    up = await upstream("ollama")
    quiet = target(up, "/api/chat")
    loud = target(
        up,
        "/api/chat",
        logging={"log_statistics": True, "log_payloads": True},
        options={"input_cost": 1, "output_cost": 2},
    )
    gw = await gateway(route(quiet, name="quiet"), route(loud, path="/loud", name="loud"))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 200
    assert buf.getvalue() == "", "no access log unless log_statistics"
    async with http.post(url(gw, "/loud"), json={"model": "llama2", "messages": CHAT}) as r:
        answer = await r.read()
    (line,) = buf.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["route"] == "loud" and entry["status"] == 200 and entry["outcome"] == "success"
    assert entry["tried_targets"] == [entry["target"]] and entry["attempts"] == 1
    meta = entry["ai"]["proxy"]["meta"]
    assert meta["provider_name"] == "llama2"
    assert meta["request_model"] == "llama2" and meta["response_model"] == "llama2"
    assert meta["request_mode"] == "oneshot" and meta["llm_latency"] >= 0
    usage = entry["ai"]["proxy"]["usage"]
    sent = up.generation_requests()[-1].json
    prompt = up.count_prompt_tokens(sent)
    assert usage["prompt_tokens"] == prompt and usage["completion_tokens"] == 8
    assert usage["total_tokens"] == prompt + 8
    assert usage["cost"] == (prompt * 1 + 8 * 2) / 1e6
    payload = entry["ai"]["proxy"]["payload"]
    assert json.loads(payload["request"])["messages"] == CHAT
    assert payload["response"] == answer.decode()


async def test_secrets_never_in_metrics_status_or_access_log(upstream, gateway, http) -> None:
    buf = capture_access_log()
    up = await upstream("ollama")
    t = target(
        up,
        "/api/chat",
        auth={"header_name": "Authorization", "header_value": f"Bearer {SECRET}"},
        logging={"log_statistics": True, "log_payloads": True},
    )
    b = target(
        up,
        "/api/chat",
        auth={"param_name": "api_key", "param_value": PARAM_SECRET, "param_location": "body"},
        logging={"log_statistics": True, "log_payloads": True},
    )
    gw = await gateway(route(t, b))
    for _ in range(2):  # one request per target
        body = {"messages": CHAT, "api_key": PARAM_SECRET, "note": SECRET}
        async with http.post(url(gw), json=body) as r:
            assert r.status == 200
    assert {rec.json.get("api_key") for rec in up.generation_requests()} >= {PARAM_SECRET}
    texts = [buf.getvalue()]
    for path in ("/metrics", "/status", "/healthz", "/readyz"):
        async with http.get(f"http://127.0.0.1:{gw.status_port}{path}") as r:
            texts.append(await r.text())
    for text in texts:
        assert SECRET not in text and PARAM_SECRET not in text
    assert len(buf.getvalue().splitlines()) == 2


async def test_reshaped_upstream_error_keeps_the_upstream_bytes_in_the_log(
    upstream, gateway, http
) -> None:
    """The client gets OpenAI's error shape; the access log keeps what the upstream said,
    also when the answer is a pass-through kept while the route failed over."""
    buf = capture_access_log()
    up = await upstream("ollama", models=("llama2",))
    logged = {"log_statistics": True, "log_payloads": True}
    once = target(up, "/api/chat", name=None, logging=logged)
    gw = await gateway(
        route(once, name="once"),
        route(
            target(up, "/api/chat", name=None, logging=logged),
            target(up, "/api/chat", name=None, logging=logged),
            path="/twice",
            name="twice",
            balancer={"failover_criteria": ["error", "http_404"], "retries": 1},
        ),
    )
    for path, attempts in (("/chat", 1), ("/twice", 2)):
        async with http.post(url(gw, path), json={"model": "nope", "messages": CHAT}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "model 'nope' not found"
            assert r.headers["X-Gateway-Attempts"] == str(attempts)
        entry = json.loads(buf.getvalue().splitlines()[-1])
        assert entry["ai"]["proxy"]["payload"]["response"] == '{"error":"model \'nope\' not found"}'


ALICE = "alice-key-0123456789"
LOGGED = {"log_statistics": True}


async def test_refused_requests_are_logged_when_the_route_logs(upstream, gateway, http) -> None:
    """A 401, a 429 or a bad body never reaches a target, yet an operator who turned
    the log on must see it: a line with no target, why it was refused, and who asked."""
    buf = capture_access_log()
    up = await upstream("ollama")
    guarded = route(target(up, "/api/chat", logging=LOGGED), name="guarded")
    guarded["key_auth"] = {}
    guarded["rate_limiting"] = {"limits": [{"requests": 1, "window": LONG_WINDOW}]}
    quiet = route(target(up, "/api/chat"), path="/quiet", name="quiet")
    quiet["key_auth"] = {}
    consumers = [{"username": "alice", "keyauth_credentials": [{"key": ALICE}]}]
    gw = await gateway(
        guarded, quiet, consumers=consumers, server={"trusted_proxies": ["127.0.0.1"]}
    )
    key = {"Authorization": f"Bearer {ALICE}"}
    for path, headers, body in (
        ("/quiet", {}, {"messages": CHAT}),  # its route does not log: no line
        ("/chat", {"Authorization": "Bearer not-a-key"}, {"messages": CHAT}),
        ("/chat", {**key, "X-Forwarded-For": "198.51.100.7"}, {"messages": CHAT}),
        ("/chat", key, {"messages": CHAT}),
    ):
        async with http.post(url(gw, path), json=body, headers=headers) as r:
            await r.read()
    async with http.post(url(gw), data=b"{not json", headers=key) as r:
        assert r.status == 429  # the limit comes before the body is read
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    got = [(e["status"], e["refused"], e["consumer"], e["target"] is None) for e in lines]
    assert got == [
        (401, "invalid", None, True),
        (200, None, "alice", False),
        (429, "requests", "alice", True),
        (429, "requests", "alice", True),
    ]
    assert lines[0]["error"] == "Unauthorized" and lines[2]["error"] == "API rate limit exceeded"
    assert "not-a-key" not in buf.getvalue()
    # The client behind a trusted proxy, else the peer.
    assert [e["client_ip"] for e in lines] == [
        "127.0.0.1",
        "198.51.100.7",
        "127.0.0.1",
        "127.0.0.1",
    ]
    assert all(e["route"] == "guarded" and e["tried_targets"] == [] for e in lines[2:])
    assert all("payload" not in e["ai"]["proxy"] for e in lines)


async def test_a_bad_body_and_a_model_no_target_has_are_logged(upstream, gateway, http) -> None:
    buf = capture_access_log()
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat", logging=LOGGED, model={"name": "llama2"})))
    async with http.post(url(gw), data=b"{not json") as r:
        assert r.status == 400
    async with http.post(url(gw), json={"model": "other", "messages": CHAT}) as r:
        assert r.status == 400
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(e["status"], e["outcome"], e["refused"], e["target"]) for e in lines] == [
        (400, "client_error", None, None),
        (400, "client_error", None, None),
    ]
    assert lines[0]["error"] == "request body doesn't contain valid prompts"
    assert lines[1]["error"] == "cannot use own model - must be: llama2"
    assert lines[1]["ai"]["proxy"]["meta"]["request_model"] == "other"
