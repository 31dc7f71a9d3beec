"""The llama.cpp fake (`gateway/sim`, used by the demo, the benchmark and most of the
suite) answers like the real `llama-server`: for the same request, the same fields and
events, the same counts, the same errors, the same connection handling.

Text that only a real model decides (words, prompt sizes after a chat template, cache
statistics, timings' values) is compared by kind: which pieces are empty, which fields
are there, not their values. The fake is given the words the real server generates, so
stop strings fall in the same places.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from realkit import SYSTEM_USER
from servers import RealServer

from gateway.sim import Behaviour, FakeUpstream

pytestmark = pytest.mark.real_upstream

PROMPT = "hello"
# Per-request values that differ between two servers (or two runs of one): kept as
# their type only.
BY_TYPE = {
    "created",
    "generation_settings",
    "params",
    "prompt",
    "tokens_evaluated",
    "prompt_tokens",
    "total_tokens",
    "tokens_cached",
    "cached_tokens",
    "n_ctx",
    "id_task",
    "n_prompt_tokens",
    "n_prompt_tokens_processed",
    "n_prompt_tokens_cache",
}


def shape(obj: Any, key: str = "") -> Any:
    """`obj` with generated text reduced to empty-or-not, ids to their prefix, token
    ids to their number, timings to their field names, the serving slot to "a slot",
    and the `BY_TYPE` fields to their type."""
    if key in BY_TYPE:
        return type(obj).__name__
    if key in ("content", "text") and isinstance(obj, str):
        return "text" if obj else ""
    if key == "id" and isinstance(obj, str):
        return obj.partition("-")[0]
    if key == "tokens" and isinstance(obj, list):
        return len(obj)
    if key == "timings" and isinstance(obj, dict):
        return sorted(obj)
    if key == "id_slot" and obj != -1:
        return "a slot"  # which of the real server's slots served it
    if isinstance(obj, dict):
        return {k: shape(v, k) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [shape(v) for v in obj]
    return obj


async def answer(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """Status and JSON body, or the list of SSE payloads ("[DONE]" kept)."""
    kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with http.post(url, **kw) as r:
        raw = (await r.read()).decode()
    if not raw.startswith("data:"):
        return r.status, json.loads(raw)
    events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return r.status, [e if e == "[DONE]" else json.loads(e) for e in events]


@pytest.fixture
async def pair(llama_server: RealServer, tiny_model: Path, upstream, http):  # type: ignore[no-untyped-def]
    """compare(path, body, fake_behaviour=None, real_body=None): the real and the fake
    answer's shapes, the fake speaking the words the real one generates."""
    fake: FakeUpstream = await upstream("llamacpp", models=[str(tiny_model)])
    words: dict[str, list[str]] = {}

    async def real_words(path: str) -> list[str]:
        if path not in words:
            body: dict[str, Any] = {"max_tokens": 12}
            if path == "/v1/chat/completions":
                body["messages"] = SYSTEM_USER
                _, doc = await answer(http, llama_server.url(path), body)
                text = doc["choices"][0]["message"]["content"]
            else:
                body["prompt"] = PROMPT
                _, doc = await answer(http, llama_server.url("/completion"), body)
                text = doc["content"]
            words[path] = text.split()
        return words[path]

    async def compare(
        path: str,
        body: Callable[[list[str]], Any],
        behaviour: Behaviour | None = None,
        real_body: Any = None,
    ) -> tuple[Any, Any]:
        w = await real_words(path)
        fake.text = " ".join(w)
        fake.behaviour = behaviour or Behaviour(n_tokens=64)
        real = await answer(
            http, llama_server.url(path), body(w) if real_body is None else real_body
        )
        got = await answer(http, fake.url(path), body(w))
        return shape(real), shape(got)

    return compare


def native(**extra: Any) -> Callable[[list[str]], dict[str, Any]]:
    return lambda w: {"prompt": PROMPT, "n_predict": 3, **extra}


def chat(**extra: Any) -> Callable[[list[str]], dict[str, Any]]:
    return lambda w: {"model": "x", "messages": SYSTEM_USER, "max_tokens": 3, **extra}


def legacy(**extra: Any) -> Callable[[list[str]], dict[str, Any]]:
    return lambda w: {"prompt": PROMPT, "max_tokens": 3, **extra}


def stops(make: Callable[[list[str]], list[str]], limit: int = 10) -> Callable[..., Any]:
    """Extra request fields: stop strings made of the words the server generates."""

    def with_stop(base: Callable[..., Any], **extra: Any) -> Callable[[list[str]], Any]:
        def body(w: list[str]) -> Any:
            b = base(**extra)(w)
            b["stop"] = make(w)
            b["n_predict" if "n_predict" in b else "max_tokens"] = limit
            return b

        return body

    return with_stop


WORD = stops(lambda w: [" " + w[2]])  # a whole token: streamed without text, counted
MID = stops(lambda w: [w[2][:3]])  # inside a token: its first part is kept
SPAN = stops(lambda w: [" " + w[1] + " " + w[2]])  # " w1" is held back, then dropped
LOST = stops(lambda w: [" " + w[1] + " " + w[2]], limit=2)  # held back when the limit hits
STREAM = {"stream": True}
USAGE = {"stream": True, "stream_options": {"include_usage": True}}

CASES: dict[str, tuple[str, Callable[[list[str]], Any]]] = {
    "native": ("/completion", native()),
    "native-stream": ("/completion", native(**STREAM)),
    "native-word": ("/completion", WORD(native)),
    "native-word-stream": ("/completion", WORD(native, **STREAM)),
    "native-mid-stream": ("/completion", MID(native, **STREAM)),
    "native-span-stream": ("/completion", SPAN(native, **STREAM)),
    "native-lost": ("/completion", LOST(native)),
    "native-lost-stream": ("/completion", LOST(native, **STREAM)),
    "chat": ("/v1/chat/completions", chat()),
    "chat-word": ("/v1/chat/completions", WORD(chat)),
    "chat-stream": ("/v1/chat/completions", chat(**STREAM)),
    "chat-usage": ("/v1/chat/completions", chat(**USAGE)),
    "chat-mid-usage": ("/v1/chat/completions", MID(chat, **USAGE)),
    "chat-word-stream": ("/v1/chat/completions", WORD(chat, **STREAM)),
    "completions": ("/v1/completions", legacy()),
    "completions-word": ("/v1/completions", WORD(legacy)),
    "completions-stream": ("/v1/completions", legacy(**STREAM)),
    "completions-usage": ("/v1/completions", legacy(**USAGE)),
    "completions-word-stream": ("/v1/completions", WORD(legacy, **STREAM)),
    "no-prompt": ("/completion", lambda w: {"n_predict": 3}),
    "null-prompt": ("/completion", lambda w: {"prompt": None}),
    "not-json": ("/completion", lambda w: b"not json"),
    "empty-body": ("/completion", lambda w: b""),
    "array-body": ("/completion", lambda w: b"[1]"),
    "no-messages": ("/v1/chat/completions", lambda w: {"model": "x"}),
    "messages-not-a-list": ("/v1/chat/completions", lambda w: {"messages": "hi"}),
    "completions-no-prompt": ("/v1/completions", lambda w: {"model": "x"}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_fake_answers_like_llama_server(pair, case: str) -> None:  # type: ignore[no-untyped-def]
    path, body = CASES[case]
    real, fake = await pair(path, body)
    assert fake == real


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_eos_token_is_streamed_and_counted(pair, stream: bool) -> None:  # type: ignore[no-untyped-def]
    """The real model never ends by itself, unless a logit bias forces its `</s>`
    first; the fake's model "wants" no token at all: both end at once with EOS."""
    body = {"prompt": PROMPT, "n_predict": 5, "stream": stream}
    real, fake = await pair(
        "/completion",
        lambda w: body,
        behaviour=Behaviour(n_tokens=0),
        real_body={**body, "logit_bias": [[2, 1000]]},
    )
    assert fake == real


async def exchange(port: int, path: str, body: bytes) -> bytes:
    """Everything a server sends on one connection until it closes it (at most 2 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        return await asyncio.wait_for(reader.read(), 2)
    except TimeoutError:
        return b"(still open)"
    finally:
        writer.close()


def connection(raw: bytes) -> tuple[str, str, str]:
    """Status line, the Connection and Keep-Alive headers, of a closed exchange."""
    if raw == b"(still open)":
        return "open", "", ""
    head = raw.split(b"\r\n\r\n", 1)[0].decode().lower().split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return head[0], fields.get("connection", ""), fields.get("keep-alive", "")


async def test_connection_handling_and_slots(
    spare_llama_server: Callable[..., RealServer], upstream
) -> None:  # type: ignore[no-untyped-def]
    """Both drop the connection after every stream although they say Keep-Alive, answer
    errors with `Connection: close`, and show a never-used slot as four fields."""
    real = spare_llama_server().start()
    fake = await upstream("llamacpp", behaviour=Behaviour(n_tokens=64))
    async with aiohttp.ClientSession() as http:
        slots = []
        for url in (real.url("/slots"), fake.url("/slots")):
            async with http.get(url) as r:
                slots.append((await r.json())[0])
        assert set(slots[0]) == set(slots[1]) == {"id", "n_ctx", "speculative", "is_processing"}
    exchanges = [
        ("/completion", {"prompt": PROMPT, "n_predict": 3, "stream": True}),
        ("/v1/chat/completions", {"messages": SYSTEM_USER, "max_tokens": 3, "stream": True}),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "stream": True}),
        ("/completion", {"n_predict": 3}),
        ("/v1/chat/completions", {"model": "x"}),
    ]
    for path, body in exchanges:
        data = json.dumps(body).encode()
        got = [connection(await exchange(s.port, path, data)) for s in (real, fake)]
        assert got[0] == got[1], (path, body)
        assert got[0][0] != "open", (path, body)
