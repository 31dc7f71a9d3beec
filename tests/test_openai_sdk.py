"""The real `openai` SDK (sync and async) as a client through the gateway to an Ollama fake."""

from __future__ import annotations

import asyncio

import openai
from helpers import read_sdk_stream, sdk_routes, target, until

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


async def make(upstream, gateway):  # type: ignore[no-untyped-def]
    up = await upstream("ollama")
    gw = await gateway(
        *sdk_routes(
            target(up, "/api/chat"), target(up, "/api/generate", route_type="llm/v1/completions")
        )
    )
    return up, f"http://127.0.0.1:{gw.port}/v1"


async def test_async_client_chat_stream_and_completions(upstream, gateway) -> None:
    up, base = await make(upstream, gateway)
    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    try:
        resp = await client.chat.completions.create(model="llama2", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        assert resp.choices[0].message.content == up.expected_text(4)
        assert resp.choices[0].finish_reason == "length"
        assert resp.usage is not None and resp.usage.completion_tokens == 4

        stream = await client.chat.completions.create(
            model="llama2",
            messages=CHAT,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = await read_sdk_stream(stream)
        assert text == up.expected_text(8) and finish == "stop"
        assert usage is not None and usage.completion_tokens == 8

        comp = await client.completions.create(model="llama2", prompt="Once upon", max_tokens=3)
        assert comp.choices[0].text == up.expected_text(3)
        assert comp.choices[0].finish_reason == "length"
    finally:
        await client.close()


async def test_sync_client(upstream, gateway) -> None:
    up, base = await make(upstream, gateway)

    def run() -> tuple[str, str]:
        with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as client:
            resp = client.chat.completions.create(model="llama2", messages=CHAT)  # type: ignore[arg-type]
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="llama2", messages=CHAT, stream=True)  # type: ignore[arg-type]
                if c.choices
            )
            return resp.choices[0].message.content or "", streamed

    full, streamed = await asyncio.to_thread(run)
    assert full == streamed == up.expected_text(8)


async def test_sdk_sees_gateway_errors(upstream, gateway) -> None:
    _, base = await make(upstream, gateway)
    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    try:
        try:
            await client.chat.completions.create(model="gpt-4", messages=CHAT)  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            assert exc.status_code == 400
            assert "cannot use own model - must be: llama2" in str(exc)
        else:
            raise AssertionError("expected a 400")
    finally:
        await client.close()


async def test_sdk_through_capacity_queue_and_429(upstream, gateway) -> None:
    """Concurrent SDK streams on a one-slot target all finish (they queue, one at a
    time); with the queue full the SDK sees a RateLimitError carrying our message, and
    its own retry of 429 gets through once the slot frees."""
    from gateway.sim import Behaviour

    up = await upstream("ollama", behaviour=Behaviour(n_tokens=4, token_interval=0.05))
    gw = await gateway(
        {
            "name": "chat",
            "paths": ["/v1/chat/completions"],
            "config": {
                "balancer": {"healthchecks": {"active": None}, "queue": {"max_size": 1}},
                "targets": [target(up, "/api/chat", max_concurrency=1)],
            },
        }
    )
    base = f"http://127.0.0.1:{gw.port}/v1"
    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    try:

        async def one() -> str:
            stream = await client.chat.completions.create(
                model="llama2",
                messages=CHAT,  # type: ignore[arg-type]
                stream=True,
            )
            text, finish, _ = await read_sdk_stream(stream)
            assert finish == "stop"
            return text

        first = asyncio.create_task(one())
        admission = gw.router.routes[0].admission
        assert admission is not None
        await until(lambda: gw.router.routes[0].targets[0].state.in_flight == 1)
        second = asyncio.create_task(one())
        await until(lambda: admission.depth == 1)
        try:
            await client.chat.completions.create(model="llama2", messages=CHAT)  # type: ignore[arg-type]
        except openai.RateLimitError as exc:
            assert exc.status_code == 429
            assert exc.response.headers["Retry-After"] == "1"
            assert "every target is at capacity and the queue is full" in str(exc)
        else:
            raise AssertionError("expected 429")
        assert await asyncio.gather(first, second) == [up.expected_text(4)] * 2
        # The SDK's own retry honours Retry-After and gets through once a slot frees.
        retrying = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=3)
        try:
            blocker = asyncio.create_task(one())
            await until(lambda: gw.router.routes[0].targets[0].state.in_flight == 1)
            queued = asyncio.create_task(one())
            await until(lambda: admission.depth == 1)
            resp = await retrying.chat.completions.create(model="llama2", messages=CHAT)  # type: ignore[arg-type]
            assert resp.choices[0].message.content == up.expected_text(4)
            await asyncio.gather(blocker, queued)
        finally:
            await retrying.close()
    finally:
        await client.close()
