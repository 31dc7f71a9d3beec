"""`llama2_format: openai` through the gateway to real llama.cpp servers, and real
clients (the `openai` SDK, curl) in front of it.

Both llama.cpp front-ends are used as OpenAI-compatible upstreams: `llama-server`'s
`/v1` layer and `python -m llama_cpp.server`. Each gateway answer is compared with the
same request sent to the server directly (greedy decoding, so the text is
reproducible): the gateway must not change a byte of the content.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from helpers import read_sdk_stream, route, sdk_routes, target, url
from realkit import (
    SYSTEM_USER,
    chat_text,
    chunks,
    completion_text,
    normalize,
    post,
    post_sse,
)
from servers import RealServer

pytestmark = pytest.mark.real_upstream

SERVERS = ["llama_server", "llama_cpp_python"]
PATHS = {"llm/v1/chat": "/v1/chat/completions", "llm/v1/completions": "/v1/completions"}
REPO = Path(__file__).resolve().parents[2]


def request_body(route_type: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": 9, "temperature": 0}
    if route_type == "llm/v1/chat":
        body["messages"] = SYSTEM_USER
    else:
        body["prompt"] = "Once upon a time"
    if stream:
        body["stream"] = True
    return body


def openai_routes(server: RealServer) -> list[dict[str, Any]]:
    """The SDK's chat and completions routes to a server's OpenAI-compatible layer."""
    return sdk_routes(
        target(server.url(PATHS["llm/v1/chat"]), "", fmt="openai"),
        target(
            server.url(PATHS["llm/v1/completions"]),
            "",
            fmt="openai",
            route_type="llm/v1/completions",
        ),
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route_type", list(PATHS), ids=["chat", "completions"])
@pytest.mark.parametrize("server_name", SERVERS)
async def test_openai_format_matches_direct_call(
    request, gateway, http, server_name: str, route_type: str, stream: bool
) -> None:
    """The gateway's answer equals the server's own answer to the request it forwards:
    same content byte for byte, same finish reason and usage; streams pass through
    event by event and end with [DONE]."""
    server = request.getfixturevalue(server_name)
    path = PATHS[route_type]
    gw = await gateway(route(target(server.url(path), "", fmt="openai", route_type=route_type)))
    body = request_body(route_type, stream)
    # What the gateway sends upstream: the body with model and stream set.
    direct_body = {**body, "model": "llama2", "stream": stream}
    text = chat_text if route_type == "llm/v1/chat" else completion_text

    if not stream:
        status, got, headers = await post(http, url(gw, "/chat"), body)
        assert status == 200, got
        assert headers["X-Gateway-Attempts"] == "1"
        _, direct, _ = await post(http, server.url(path), direct_body)
        # The same answer; the fields OpenAI's schema requires even when null, which
        # these servers leave out, are added by the gateway.
        for choice in direct["choices"]:
            choice.setdefault("logprobs", None)
            if "message" in choice:
                choice["message"].setdefault("refusal", None)
        assert normalize(got) == normalize(direct)
        choice = got["choices"][0]
        content = choice["message"]["content"] if "message" in choice else choice["text"]
        assert content.startswith(" ") and len(content.split()) == 9  # nine " word" tokens
        assert choice["finish_reason"] == "length"
        assert got["usage"]["completion_tokens"] == 9
        return

    r, events = await post_sse(http, url(gw, "/chat"), body)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    _, direct_events = await post_sse(http, server.url(path), direct_body)
    assert events[-1] == direct_events[-1] == "[DONE]"
    assert normalize(chunks(events)) == normalize(chunks(direct_events))
    _, whole, _ = await post(http, server.url(path), {**direct_body, "stream": False})
    first = whole["choices"][0]
    assert text(chunks(events)) == first.get("text", (first.get("message") or {}).get("content"))


async def test_openai_sdk_async_stream_with_usage(llama_server, gateway, http) -> None:
    """The async SDK through the gateway to llama-server's /v1 layer: chat, a stream
    with `stream_options.include_usage` (usage chunk = the server's counts), completions."""
    gw = await gateway(*openai_routes(llama_server))
    _, direct, _ = await post(
        http,
        llama_server.url("/v1/chat/completions"),
        {"model": "llama2", "messages": SYSTEM_USER, "max_tokens": 7, "temperature": 0},
    )
    client = openai.AsyncOpenAI(base_url=url(gw, "/v1"), api_key="unused", max_retries=0)
    try:
        resp = await client.chat.completions.create(
            model="llama2",
            messages=SYSTEM_USER,  # type: ignore[arg-type]
            max_tokens=7,
            temperature=0,
        )
        assert resp.choices[0].message.content == direct["choices"][0]["message"]["content"]
        assert resp.usage is not None
        assert resp.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
        assert resp.usage.completion_tokens == 7

        stream = await client.chat.completions.create(
            model="llama2",
            messages=SYSTEM_USER,  # type: ignore[arg-type]
            max_tokens=7,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = await read_sdk_stream(stream)
        assert text == direct["choices"][0]["message"]["content"] and finish == "length"
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            direct["usage"]["prompt_tokens"],
            7,
        )

        comp = await client.completions.create(
            model="llama2", prompt="Once upon a time", max_tokens=5, temperature=0
        )
        _, direct_comp, _ = await post(
            http,
            llama_server.url("/v1/completions"),
            {"model": "llama2", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0},
        )
        assert comp.choices[0].text == direct_comp["choices"][0]["text"]
        assert comp.choices[0].finish_reason == "length"
    finally:
        await client.close()


async def test_openai_sdk_sync_client(llama_cpp_python, gateway, http) -> None:
    """The sync SDK (in a worker thread) through the gateway to llama-cpp-python: a chat,
    a streamed chat and a completion, each equal to the server's direct answer."""
    gw = await gateway(*openai_routes(llama_cpp_python))
    _, direct, _ = await post(
        http,
        llama_cpp_python.url("/v1/chat/completions"),
        {"model": "llama2", "messages": SYSTEM_USER, "max_tokens": 6, "temperature": 0},
    )
    _, direct_comp, _ = await post(
        http,
        llama_cpp_python.url("/v1/completions"),
        {"model": "llama2", "prompt": "Hello", "max_tokens": 4, "temperature": 0},
    )

    def run() -> tuple[str, str, str, int]:
        with openai.OpenAI(base_url=url(gw, "/v1"), api_key="unused", max_retries=0) as client:
            whole = client.chat.completions.create(
                model="llama2",
                messages=SYSTEM_USER,  # type: ignore[arg-type]
                max_tokens=6,
                temperature=0,
            )
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="llama2",
                    messages=SYSTEM_USER,  # type: ignore[arg-type]
                    max_tokens=6,
                    temperature=0,
                    stream=True,
                )
                if c.choices
            )
            comp = client.completions.create(
                model="llama2", prompt="Hello", max_tokens=4, temperature=0
            )
            assert whole.usage is not None
            return (
                whole.choices[0].message.content or "",
                streamed,
                comp.choices[0].text,
                whole.usage.completion_tokens,
            )

    content, streamed, comp_text, n = await asyncio.to_thread(run)
    assert content == streamed == direct["choices"][0]["message"]["content"]
    assert comp_text == direct_comp["choices"][0]["text"]
    assert n == 6


async def test_seed_curl_against_example_config(llama_server, gateway, http) -> None:
    """README's seed request — `curl` POST /llama2-chat with a system and a user
    message, no model, no max_tokens — against config.example.yaml's /llama2-chat route
    with a real upstream behind it.

    The example's target is an Ollama; there is no real Ollama here, so the same route
    (same name, path, plugin, model name) gets an `openai` target on llama-server's
    OpenAI-compatible layer, and `max_tokens` in the target options (the config value wins)
    because the seed request sets none and the test model never stops by itself.
    """
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    seed = next(r for r in example["routes"] if r["name"] == "llama2-chat")
    (tgt,) = seed["config"]["targets"]
    assert tgt["model"]["options"]["llama2_format"] == "ollama"  # what we stand in for
    tgt["model"]["options"] = {
        "llama2_format": "openai",
        "upstream_url": llama_server.url("/v1/chat/completions"),
        "max_tokens": 12,
    }
    gw = await gateway(seed)
    seed_body = (
        '{\n  "messages": [\n'
        '    {"role": "system", "content": "You are a mathematician."},\n'
        '    {"role": "user", "content": "What is 1+1?"}\n  ]}'
    )
    proc = await asyncio.create_subprocess_exec(
        curl,
        "-s",
        "-w",
        "\n%{http_code}",
        url(gw, "/llama2-chat"),
        "-H",
        "Content-Type: application/json",
        "-d",
        seed_body,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    assert code == "200", body
    got = json.loads(body)
    _, direct, _ = await post(
        http,
        llama_server.url("/v1/chat/completions"),
        {"model": "llama2", "messages": json.loads(seed_body)["messages"], "max_tokens": 12},
    )
    assert got["object"] == "chat.completion"
    assert got["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert [got["usage"][k] for k in keys] == [direct["usage"][k] for k in keys]
    assert direct["usage"]["completion_tokens"] == 12
