"""Small helpers shared by the real-upstream test modules."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SYSTEM_USER = [
    {"role": "system", "content": "You are a mathematician."},
    {"role": "user", "content": "What is 1+1?"},
]
DIALOG = [
    {"role": "system", "content": "You are a video game knowledgebase."},
    {"role": "user", "content": "What is Missingno.?"},
    {"role": "assistant", "content": "A glitch in a popular game."},
    {"role": "user", "content": "Why is it popular?"},
]
# Fields that legitimately differ between two identical requests.
VOLATILE = ("id", "created", "timings")
# One connection per request: llama-server closes a connection after a streamed answer
# although that answer says `Keep-Alive`, so a pooled one may be dead when reused.
ONCE = {"Connection": "close"}


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(url, json=body, headers=ONCE) as r:
        return r.status, await r.json(content_type=None), r.headers


async def post_sse(
    http: aiohttp.ClientSession, url: str, body: Any
) -> tuple[aiohttp.ClientResponse, list[str]]:
    """POST and return the `data:` payloads of the SSE answer (comments dropped)."""
    async with http.post(url, json=body, headers=ONCE) as r:
        raw = (await r.read()).decode()
    return r, sse_payloads(raw)


def sse_payloads(raw: str) -> list[str]:
    out = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def normalize(obj: Any) -> Any:
    """An OpenAI-style object without the per-request fields (ids, timestamps, timings,
    prompt-cache statistics), for comparing two answers to the same request."""
    if isinstance(obj, list):
        return [normalize(o) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: normalize(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(out.get("usage"), dict):
        out["usage"].pop("prompt_tokens_details", None)
    return out


def chat_text(cs: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in cs if c["choices"])


def completion_text(cs: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0].get("text") or "" for c in cs if c["choices"])


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        assert r.status == 200, r.status
        return await r.text()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll an async predicate until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
