"""Config builders for tests: Kong-shaped targets and routes pointing at fake upstreams;
what the `openai` SDK tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.server import GatewayServer
from gateway.sim import FakeUpstream


def target(
    up: FakeUpstream | str,
    path: str,
    fmt: str = "ollama",
    route_type: str = "llm/v1/chat",
    name: str | None = "llama2",
    **extra: Any,
) -> dict[str, Any]:
    """A Kong AI Proxy Advanced target dict pointing at a fake upstream."""
    url = up if isinstance(up, str) else up.url(path)
    options: dict[str, Any] = {"llama2_format": fmt, "upstream_url": url}
    options.update(extra.pop("options", {}))
    model: dict[str, Any] = {"provider": "llama2", "options": options}
    if name is not None:
        model["name"] = name
    model.update(extra.pop("model", {}))
    return {"route_type": route_type, "model": model, **extra}


def route(
    *targets: dict[str, Any], path: str = "/chat", name: str = "r", **config: Any
) -> dict[str, Any]:
    config.setdefault("balancer", {})
    # Active probes would add GETs to the fakes' logs; tests of health enable them.
    config["balancer"].setdefault("healthchecks", {"active": None})
    return {
        "name": name,
        "paths": [path],
        "plugin": "ai-proxy-advanced",
        "config": {"targets": list(targets), **config},
    }


def sdk_routes(chat: dict[str, Any], completions: dict[str, Any]) -> list[dict[str, Any]]:
    """Two routes at the paths the `openai` SDK calls below a `/v1` base URL."""
    return [
        route(chat, path="/v1/chat/completions", name="chat"),
        route(completions, path="/v1/completions", name="completions"),
    ]


async def read_sdk_stream(stream: Any) -> tuple[str, str | None, Any]:
    """Text, finish reason and usage of an `openai` SDK async chat stream."""
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    return text, finish, usage


# A rate-limit window for tests on the real clock. Windows are aligned to the epoch, so a
# window edge during a test would reset its counters: 366 days makes that a matter of
# one second a year, where an hour's window would be one in 3600.
LONG_WINDOW = 366 * 24 * 3600


def url(gw: GatewayServer, path: str = "/chat") -> str:
    return f"http://127.0.0.1:{gw.port}{path}"


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that changes over sockets: a bound on waiting, not a timing
    assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
