"""Rate limits per consumer (or client IP): requests and tokens per fixed window.

Windows are aligned to the epoch (`floor(now / window)`), so every replica counts in
the same window without talking to the others; `strategy: redis` shares the counters
themselves. A request is admitted when every requests counter has room for one more
and no tokens counter is spent; only then are the requests counters incremented (a
refused request does not eat into the next one's room). Tokens are added when the
answer is complete, from its usage (as Kong's AI rate limiting does), so a window's
last request may overshoot a tokens limit: the next one is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config.schema import RateLimit, RateLimitingConfig
from ..errors import GatewayError
from ..logs import event
from .stores import Counter, LocalStore, Store, StoreError

log = logging.getLogger("llama_gateway")

RATE_LIMITED = "API rate limit exceeded"
STORE_DOWN = "rate limiting is unavailable"
_BACKOFF_MIN, _BACKOFF_MAX = 1.0, 30.0


@dataclass(slots=True)
class Admitted:
    """An admitted request: who to charge its tokens to, and the headers to send."""

    identity: str
    headers: dict[str, str]


class RateLimited(GatewayError):
    def __init__(self, message: str, headers: dict[str, str], kind: str) -> None:
        super().__init__(429 if kind != "store" else 503, message, headers)
        self.kind = kind  # requests | tokens | store: a metric label


class RateLimiter:
    """One route's limits. `admit` before the pipeline, `spend` when the answer is done."""

    def __init__(
        self,
        cfg: RateLimitingConfig,
        route: str,
        store: Store | None = None,
        wall: Callable[[], float] = time.time,
        on_store_error: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.route = route
        self.store: Store = store if store is not None else LocalStore()
        self.wall = wall
        self.on_store_error = on_store_error
        # Requests limits first, then tokens: the order the stores take them in.
        self._order = [lim for lim in cfg.limits if lim.kind == "requests"]
        self._n_requests = len(self._order)
        self._order += [lim for lim in cfg.limits if lim.kind == "tokens"]
        self._tokens = self._order[self._n_requests :]
        self._limit_text = [str(lim.limit) for lim in self._order]
        self._down_until = 0.0
        self._backoff = _BACKOFF_MIN
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def store_down(self) -> bool:
        """The store failed and is not asked again until its backoff ends."""
        return self._down_until != 0.0

    def _counters(self, identity: str, now: float, limits: list[RateLimit]) -> list[Counter]:
        # A tag with the route's name: routes sharing a Redis never share counters.
        tag = f"{self.route}\x1f{identity}"
        out = []
        for lim in limits:
            index = int(now // lim.window)
            ttl = math.ceil((index + 1) * lim.window - now) + 1
            out.append(Counter(tag, lim.kind, lim.window, index, lim.limit, ttl))
        return out

    async def admit(self, identity: str) -> Admitted:
        now = self.wall()
        counters = self._counters(identity, now, self._order)
        if now < self._down_until:
            return self._store_failed(identity)
        try:
            ok, values = await self.store.admit(counters, self._n_requests)
        except StoreError as exc:
            self._failed(now, exc)
            return self._store_failed(identity)
        self._recovered()
        headers = {} if self.cfg.hide_client_headers else self._headers(counters, values)
        if not ok:
            n = self._n_requests
            exhausted = [
                c
                for i, (c, v) in enumerate(zip(counters, values, strict=True))
                if (v + 1 > c.limit if i < n else v >= c.limit)
            ]
            headers["Retry-After"] = str(max(c.ttl - 1 for c in exhausted))
            kind = "tokens" if all(c.kind == "tokens" for c in exhausted) else "requests"
            raise RateLimited(RATE_LIMITED, headers, kind)
        return Admitted(identity, headers)

    def _headers(self, counters: list[Counter], values: list[int]) -> dict[str, str]:
        """Kong-style `X-RateLimit-Limit/Remaining/Reset` for the tightest limit (the
        smallest share left), and OpenAI's `X-RateLimit-*-Requests` / `-Tokens` for the
        tightest of each kind. Remaining counts the request being admitted; reset is
        whole seconds until that limit's window ends."""
        n = self._n_requests
        best_req = best_tok = best = -1
        share_req = share_tok = share = 2.0
        remaining = [0] * len(values)
        for i, c in enumerate(counters):
            left = c.limit - values[i]
            left = remaining[i] = left if left > 0 else 0
            frac = left / c.limit
            if i < n:
                if frac < share_req:
                    share_req, best_req = frac, i
            elif frac < share_tok:
                share_tok, best_tok = frac, i
            if frac < share:
                share, best = frac, i
        text = self._limit_text
        out: dict[str, str] = {}
        for i, suffix in ((best_req, "-Requests"), (best_tok, "-Tokens")):
            if i >= 0:
                out["X-RateLimit-Limit" + suffix] = text[i]
                out["X-RateLimit-Remaining" + suffix] = str(remaining[i])
                out["X-RateLimit-Reset" + suffix] = f"{counters[i].ttl - 1}s"
        out["X-RateLimit-Limit"] = text[best]
        out["X-RateLimit-Remaining"] = str(remaining[best])
        out["X-RateLimit-Reset"] = str(counters[best].ttl - 1)
        return out

    def spend(self, identity: str, tokens: int) -> None:
        """Charge an answer's tokens (in the background: the answer is already sent)."""
        if tokens <= 0 or not self._tokens:
            return
        now = self.wall()
        if now < self._down_until:
            return
        counters = self._counters(identity, now, self._tokens)
        done = self.store.spend(counters, tokens)
        if done is None:
            return
        task = asyncio.ensure_future(self._spend(done, now))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _spend(self, done: Awaitable[None], now: float) -> None:
        try:
            await done
        except StoreError as exc:
            self._failed(now, exc)

    def _store_failed(self, identity: str) -> Admitted:
        """A request decided without the store (it failed now, or is in its backoff):
        each one counted, as the metric promises."""
        if self.on_store_error is not None:
            self.on_store_error("allowed" if self.cfg.fault_tolerant else "rejected")
        if self.cfg.fault_tolerant:
            return Admitted(identity, {})
        raise RateLimited(STORE_DOWN, {"Retry-After": "1"}, "store")

    def _failed(self, now: float, exc: StoreError) -> None:
        if self._down_until == 0.0:
            event(
                log,
                "ratelimit.store_down",
                f"rate limit store for route {self.route} failed: {exc}; "
                + ("letting requests through" if self.cfg.fault_tolerant else "refusing requests"),
                level=logging.WARNING,
                route=self.route,
                error=str(exc),
                fault_tolerant=self.cfg.fault_tolerant,
            )
        else:
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        self._down_until = now + self._backoff

    def _recovered(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            self._backoff = _BACKOFF_MIN
            event(
                log,
                "ratelimit.store_up",
                f"rate limit store for route {self.route} answers again",
                route=self.route,
            )

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.store.close()
