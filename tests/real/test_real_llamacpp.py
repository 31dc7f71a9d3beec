"""`llama2_format: raw` with `raw_flavor: llamacpp` through the gateway to a real native
`llama-server` (`/completion`), plus what only a real server can show: its `/health`
loading phase, a crash, and generation stopping when the client goes away (`/slots`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import route, target, url
from realkit import (
    DIALOG,
    SYSTEM_USER,
    chat_text,
    chunks,
    metric,
    post,
    post_sse,
    scrape,
    sse_payloads,
    wait_for,
)
from servers import HeldModel, RealServer, http_get
from tap import Tap

pytestmark = pytest.mark.real_upstream

RAW = {"raw_flavor": "llamacpp"}
FAST_HEALTH = {
    "active": {
        "healthy": {"interval": 0.1, "successes": 1},
        "unhealthy": {"interval": 0.1, "http_failures": 1, "tcp_failures": 1, "timeouts": 1},
        "timeout": 1,
    }
}


def raw_target(
    server: RealServer | Tap, route_type: str = "llm/v1/chat", **options: Any
) -> dict[str, Any]:
    return target(
        server.url("/completion"),
        "",
        fmt="raw",
        route_type=route_type,
        options={**RAW, **options},
    )


async def template(http: aiohttp.ClientSession, server: RealServer, messages: Any) -> str:
    """The model's own chat template as the server renders it (POST /apply-template),
    without the BOS text: llama.cpp adds the BOS token itself."""
    status, body, _ = await post(http, server.url("/apply-template"), {"messages": messages})
    assert status == 200, body
    return str(body["prompt"]).removeprefix("<s>")


async def complete(
    http: aiohttp.ClientSession, server: RealServer, prompt: str, n: int, **extra: Any
) -> dict[str, Any]:
    body = {"prompt": prompt, "n_predict": n, "temperature": 0, **extra}
    status, got, _ = await post(http, server.url("/completion"), body)
    assert status == 200, got
    return got


async def test_raw_prompt_is_the_models_own_template(llama_server, tap, gateway, http) -> None:
    """Our Meta Llama-2 prompt equals what the model's chat template renders (the
    server's /apply-template) minus the BOS; the answer equals the server's own answer
    to that prompt, with usage = the server's token counts."""
    t = await tap(llama_server)
    gw = await gateway(route(raw_target(t)))
    conversations = [
        SYSTEM_USER,
        DIALOG,
        [{"role": "user", "content": "Hello there"}],
        [
            {"role": "user", "content": "  Spaces around  "},
            {"role": "assistant", "content": " ok "},
            {"role": "user", "content": "again"},
        ],
    ]
    for i, messages in enumerate(conversations):
        status, got, headers = await post(
            http, url(gw), {"messages": messages, "max_tokens": 6, "temperature": 0}
        )
        assert status == 200, got
        sent = json.loads(t.generations()[i].request)
        expected_prompt = await template(http, llama_server, messages)
        assert sent["prompt"] == expected_prompt, messages
        assert not sent["prompt"].startswith("<s>")
        assert sent["n_predict"] == 6 and sent["temperature"] == 0 and sent["stream"] is False

        direct = await complete(http, llama_server, expected_prompt, 6)
        assert got["object"] == "chat.completion"
        assert got["choices"][0]["message"] == {
            "role": "assistant",
            "content": direct["content"],
            "refusal": None,
        }
        assert got["choices"][0]["finish_reason"] == "length" and direct["stop_type"] == "limit"
        assert got["usage"] == {
            "prompt_tokens": direct["tokens_evaluated"],
            "completion_tokens": direct["tokens_predicted"],
            "total_tokens": direct["tokens_evaluated"] + direct["tokens_predicted"],
        }
        assert headers["X-Kong-LLM-Model"] == "llama2/llama2"


async def test_raw_native_stream_gets_done_and_server_usage(
    llama_server, tap, gateway, http
) -> None:
    """llama.cpp's native SSE (no [DONE] upstream) becomes an OpenAI chunk stream that
    ends with [DONE]; text and usage equal the server's; the gateway's Kong token
    counters equal the server's counts too."""
    t = await tap(llama_server)
    gw = await gateway(route(raw_target(t)))
    body = {
        "messages": DIALOG,
        "max_tokens": 11,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    before = await scrape(http, llama_server.url("/metrics"))
    r, events = await post_sse(http, url(gw), body)
    after = await scrape(http, llama_server.url("/metrics"))
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert events[-1] == "[DONE]"

    upstream = t.generations()[0]
    raw_events = sse_payloads(upstream.response.decode())
    assert "[DONE]" not in raw_events  # llama.cpp's native stream has no sentinel
    final = json.loads(raw_events[-1])
    assert final["stop"] is True and final["stop_type"] == "limit"

    cs = chunks(events)
    assert cs[0]["choices"][0]["delta"].get("role") == "assistant"
    direct = await complete(http, llama_server, json.loads(upstream.request)["prompt"], 11)
    assert chat_text(cs) == direct["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in cs if c["choices"]]
    assert [f for f in finishes if f] == ["length"]
    usage = {"prompt_tokens": final["tokens_evaluated"], "completion_tokens": 11}
    usage["total_tokens"] = usage["prompt_tokens"] + 11
    assert cs[-1]["choices"] == [] and cs[-1]["usage"] == usage
    assert direct["tokens_evaluated"] == usage["prompt_tokens"]
    assert (
        metric(after, "llamacpp:tokens_predicted_total")
        - metric(before, "llamacpp:tokens_predicted_total")
        == 11
    )

    text = await scrape(http, f"http://127.0.0.1:{gw.status_port}/metrics")
    for token_type, n in usage.items():
        assert metric(text, "kong_ai_llm_tokens_total", token_type=token_type) == n


async def test_raw_completions_and_stop_word(llama_server, gateway, http) -> None:
    """A completions route sends the client's prompt as given; a stop string ends the
    generation early (llama.cpp stop_type "word" → finish_reason "stop")."""
    gw = await gateway(route(raw_target(llama_server, "llm/v1/completions")))
    status, got, _ = await post(
        http, url(gw), {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    )
    assert status == 200, got
    direct = await complete(http, llama_server, "Once upon a time", 8)
    assert got["object"] == "text_completion"
    assert got["choices"][0]["text"] == direct["content"]
    assert got["usage"]["prompt_tokens"] == direct["tokens_evaluated"]

    words = direct["content"].split()
    stop = " " + words[3]
    status, got, _ = await post(
        http,
        url(gw),
        {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stop": [stop]},
    )
    assert status == 200, got
    assert got["choices"][0]["text"] == " " + " ".join(words[:3])
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"]["completion_tokens"] == 4  # the stop word's token was generated


async def test_active_health_check_follows_real_loading_phase(
    llama_server, spare_llama_server, held_model: HeldModel, gateway, http
) -> None:
    """A llama-server that is still loading its model answers /health with 503
    "Loading model"; the gateway's active checks keep it out of rotation until its
    /health says ok, then it is chosen again."""
    loading = spare_llama_server(held_model.path)
    loading.spawn()

    async def says_loading() -> bool:
        status, body = await _get(loading.url("/health"))
        return status == 503 and body["error"]["message"] == "Loading model"

    assert await wait_for(says_loading, 10), loading.tail()
    good = raw_target(llama_server)
    good["name"] = "ready"
    late = raw_target(loading)
    late["name"] = "loading"
    gw = await gateway(route(good, late, balancer={"healthchecks": FAST_HEALTH}))
    await asyncio.sleep(0.6)  # several probe rounds

    body = {"messages": SYSTEM_USER, "max_tokens": 3, "temperature": 0}
    for _ in range(6):
        status, got, headers = await post(http, url(gw), body)
        assert status == 200, got
        assert headers["X-Gateway-Target"] == "ready"
        assert headers["X-Gateway-Attempts"] == "1"
    assert await says_loading()

    held_model.release()  # the model load proceeds
    await asyncio.to_thread(loading.wait_ready, 30)
    seen: set[str] = set()

    async def late_one_chosen() -> bool:
        status, got, headers = await post(http, url(gw), body)
        assert status == 200, got
        seen.add(headers["X-Gateway-Target"])
        return "loading" in seen

    assert await wait_for(late_one_chosen, 10, interval=0.1), seen


async def test_failover_from_killed_server(
    llama_server, spare_llama_server: Callable[..., RealServer], gateway, http
) -> None:
    """Two real servers behind one route; one is killed (SIGKILL): every later request
    still succeeds on the survivor, the ones first sent to the dead one on attempt 2."""
    doomed = spare_llama_server().start()
    a = raw_target(llama_server)
    a["name"] = "survivor"
    b = raw_target(doomed)
    b["name"] = "doomed"
    gw = await gateway(route(b, a))
    body = {"messages": SYSTEM_USER, "max_tokens": 4, "temperature": 0}

    answers = set()
    targets = set()
    for _ in range(2):
        status, got, headers = await post(http, url(gw), body)
        assert status == 200, got
        answers.add(got["choices"][0]["message"]["content"])
        targets.add(headers["X-Gateway-Target"])
    assert targets == {"survivor", "doomed"} and len(answers) == 1  # same model, same text

    doomed.kill()
    attempts = []
    for i in range(6):
        if i % 2:
            r, events = await post_sse(http, url(gw), {**body, "stream": True})
            assert r.status == 200 and events[-1] == "[DONE]"
            assert chat_text(chunks(events)) in answers
            headers = r.headers
        else:
            status, got, headers = await post(http, url(gw), body)
            assert status == 200, got
            assert got["choices"][0]["message"]["content"] in answers
        assert headers["X-Gateway-Target"] == "survivor"
        attempts.append(headers["X-Gateway-Attempts"])
    assert "2" in attempts, attempts


async def test_client_disconnect_stops_generation(llama_server, gateway, http) -> None:
    """A client that goes away mid-stream cancels the upstream request: the real
    server's /slots shows every slot idle again long before the requested tokens could
    have been generated, and its token counter stops far short of them."""
    gw = await gateway(route(raw_target(llama_server, "llm/v1/completions")))
    n_predict = 12000

    async def busy_slots() -> int:
        status, slots = await _get(llama_server.url("/slots"))
        assert status == 200
        return sum(1 for s in slots if s["is_processing"])

    async def idle() -> bool:
        return await busy_slots() == 0

    assert await wait_for(idle, 5)
    before = metric(
        await scrape(http, llama_server.url("/metrics")), "llamacpp:tokens_predicted_total"
    )
    body = {"prompt": "Once upon a time", "max_tokens": n_predict, "temperature": 0, "stream": True}
    async with http.post(url(gw), json=body) as r:
        assert r.status == 200
        for _ in range(5):
            assert (await r.content.readline()).startswith(b"data: ")
            await r.content.readline()
        assert await busy_slots() == 1  # still generating
        r.close()  # the client vanishes: its connection is closed mid-stream

    assert await wait_for(idle, 5), "the slot kept generating"
    after = metric(
        await scrape(http, llama_server.url("/metrics")), "llamacpp:tokens_predicted_total"
    )
    assert 5 <= after - before < n_predict // 2


async def _get(u: str) -> tuple[int, Any]:
    return await asyncio.to_thread(http_get, u)
