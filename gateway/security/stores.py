"""Where rate-limit counters live: this process (`local`) or a shared Redis.

Both do the same two operations, each atomic: `admit` (read every counter of one
identity; if each requests counter has room for one more and no tokens counter is
spent, increment the requests counters) and `spend` (add tokens). A counter's key names
its window, and it expires when the window is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..config.schema import RedisConfig


class Counter(NamedTuple):
    """One limit's counter for one identity in the current window (a tuple: made on
    every admitted request)."""

    tag: str  # route and identity, as one string with no meaning inside
    kind: str  # requests | tokens
    window: int  # seconds
    number: int  # floor(now / window): which window
    limit: int
    ttl: int  # seconds until the window is over (rounded up), plus one


class StoreError(Exception):
    """The counter store did not answer (in time)."""


class Store(Protocol):
    async def admit(self, counters: list[Counter], n_requests: int) -> tuple[bool, list[int]]:
        """`counters[:n_requests]` count requests, the rest tokens. Returns whether the
        request is admitted and each counter's value (requests: after the increment
        when admitted)."""
        ...

    def spend(self, counters: list[Counter], tokens: int) -> Awaitable[None] | None:
        """Add `tokens` to each counter; an awaitable when the store is remote."""
        ...

    async def close(self) -> None: ...


class LocalStore:
    """Counters in a dict: one entry per (identity, kind, window) holding the current
    window's index and count. An entry of a past window counts as zero; past entries
    are swept when the dict doubles (many one-off client IPs)."""

    __slots__ = ("_counts", "_sweep_at")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._sweep_at = 10_000

    def _value(self, c: Counter) -> int:
        entry = self._counts.get((c.tag, c.kind, c.window))
        return entry[1] if entry is not None and entry[0] == c.number else 0

    async def admit(self, counters: list[Counter], n_requests: int) -> tuple[bool, list[int]]:
        values = [self._value(c) for c in counters]
        ok = all(
            (v + 1 <= c.limit) if i < n_requests else (v < c.limit)
            for i, (c, v) in enumerate(zip(counters, values, strict=True))
        )
        if ok:
            for i in range(n_requests):
                c = counters[i]
                values[i] += 1
                self._counts[(c.tag, c.kind, c.window)] = (c.number, values[i])
            if len(self._counts) >= self._sweep_at:
                self._sweep(counters)
        return ok, values

    def spend(self, counters: list[Counter], tokens: int) -> None:
        for c in counters:
            self._counts[(c.tag, c.kind, c.window)] = (c.number, self._value(c) + tokens)

    def _sweep(self, current: list[Counter]) -> None:
        now_index = {c.window: c.number for c in current}
        self._counts = {k: v for k, v in self._counts.items() if v[0] >= now_index.get(k[2], v[0])}
        self._sweep_at = max(10_000, 2 * len(self._counts))

    async def close(self) -> None:
        return None


# Atomic in Redis. ARGV[1] = number of requests counters (the first KEYS), then each
# key's limit, then each key's TTL. Returns {admitted (0|1), value per key}.
_ADMIT = """
local n = tonumber(ARGV[1])
local k = #KEYS
local out = {1}
for i = 1, k do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  local limit = tonumber(ARGV[1 + i])
  if (i <= n and v + 1 > limit) or (i > n and v >= limit) then out[1] = 0 end
  out[i + 1] = v
end
if out[1] == 1 then
  for i = 1, n do
    local v = redis.call('INCR', KEYS[i])
    if v == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1 + k + i]) end
    out[i + 1] = v
  end
end
return out
"""
# ARGV[1] = tokens, then each key's TTL.
_SPEND = """
local n = tonumber(ARGV[1])
for i = 1, #KEYS do
  local v = redis.call('INCRBY', KEYS[i], n)
  if v == n then redis.call('EXPIRE', KEYS[i], ARGV[1 + i]) end
end
return 0
"""


class RedisStore:
    """Counters in Redis, shared by every replica using the same URL and prefix. Keys
    of one identity share a hash tag, so the scripts also run on Redis Cluster."""

    def __init__(self, cfg: RedisConfig) -> None:
        import redis.asyncio as aioredis  # optional dependency: checked at config load

        self._errors: tuple[type[BaseException], ...] = (
            aioredis.RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        self.prefix = cfg.prefix
        self.client: Any = aioredis.Redis.from_url(
            cfg.url,
            socket_timeout=cfg.timeout,
            socket_connect_timeout=cfg.timeout,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        self._admit = self.client.register_script(_ADMIT)
        self._spend = self.client.register_script(_SPEND)

    def _keys(self, counters: list[Counter]) -> list[str]:
        # The tag in braces: Redis Cluster hashes only that part.
        p = self.prefix
        return [f"{p}:{{{c.tag}}}:{c.kind}:{c.window}:{c.number}" for c in counters]

    async def admit(self, counters: list[Counter], n_requests: int) -> tuple[bool, list[int]]:
        args = [n_requests, *(c.limit for c in counters), *(c.ttl for c in counters)]
        try:
            out = await self._admit(keys=self._keys(counters), args=args)
        except self._errors as exc:
            raise StoreError(_describe(exc)) from None
        return bool(int(out[0])), [int(v) for v in out[1:]]

    def spend(self, counters: list[Counter], tokens: int) -> Awaitable[None]:
        return self._spend_now(counters, tokens)

    async def _spend_now(self, counters: list[Counter], tokens: int) -> None:
        try:
            await self._spend(keys=self._keys(counters), args=[tokens, *(c.ttl for c in counters)])
        except self._errors as exc:
            raise StoreError(_describe(exc)) from None

    async def close(self) -> None:
        await self.client.aclose()


def _describe(exc: BaseException) -> str:
    """The failure without the URL (it may carry a password)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
