"""A route's door policy: key-auth, then rate limits, before the pipeline.

Guards belong to a runtime (consumers may change on a reload while a route does not),
and are attached to its routes; a rate limiter (with its counters and its Redis
connections) is carried over a reload when the route keeps its name and its
`rate_limiting` block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config.schema import ConsumerConfig
from .clientip import Network, networks, request_client
from .keyauth import Credential, KeyAuth, consumers_by_digest
from .ratelimit import Admitted, RateLimiter
from .stores import RedisStore, Store

if TYPE_CHECKING:
    from ..routing import Route

StoreErrorHook = Callable[[str], Callable[[str], None]]  # route → (action → None)


class RouteGuard:
    __slots__ = ("key_auth", "limiter", "trusted")

    def __init__(
        self,
        key_auth: KeyAuth | None,
        limiter: RateLimiter | None,
        trusted: tuple[Network, ...] = (),
    ) -> None:
        self.key_auth = key_auth
        self.limiter = limiter
        self.trusted = trusted  # proxies whose X-Forwarded-For is believed

    @property
    def reads_body(self) -> bool:
        """Key-auth may find the key in the body: the check waits for it."""
        return self.key_auth is not None and self.key_auth.cfg.key_in_body

    def authenticate(
        self, request: web.Request, body: Mapping[str, Any] | None = None
    ) -> Credential | None:
        """Raises `Rejected` (401/403) when key-auth is on and the key is not good."""
        if self.key_auth is None:
            return None
        return self.key_auth.authenticate(request.headers, request.query, body)

    async def admit(self, request: web.Request, cred: Credential | None) -> Admitted | None:
        """Raises `RateLimited` (429, or 503 when the store is down and the route is
        not fault tolerant)."""
        if self.limiter is None:
            return None
        if self.limiter.cfg.identifier == "consumer" and cred is not None:
            identity = cred.consumer.username
        else:
            identity = request_client(request, self.trusted)
        return await self.limiter.admit(identity)


def attach_guards(
    routes: Sequence[Route],
    consumers: tuple[ConsumerConfig, ...],
    previous: Sequence[Route] = (),
    store_error: StoreErrorHook | None = None,
    trusted_proxies: Sequence[str] = (),
    local_store: Callable[[], Store] | None = None,
) -> list[RateLimiter]:
    """Give each route its guard (None when it has neither block). Returns the
    limiters of `previous` that are no longer used, for the caller to close once
    requests on the old runtime are done. `local_store`: where `strategy: local`
    counts when this process is one of a pod's workers (podstore.py); else in the
    limiter itself."""
    by_digest = consumers_by_digest(consumers)
    trusted = networks(trusted_proxies)
    old = {r.name: r.guard.limiter for r in previous if r.guard and r.guard.limiter}
    kept: set[int] = set()
    for route in routes:
        cfg = route.cfg
        key_auth = KeyAuth(cfg.key_auth, cfg.name, by_digest) if cfg.key_auth else None
        limiter = None
        rl = cfg.rate_limiting
        if rl is not None:
            prev = old.get(cfg.name)
            if prev is not None and prev.cfg == rl:
                limiter = prev
                kept.add(id(prev))
            else:
                store: Store | None = None
                if rl.strategy == "redis" and rl.redis is not None:
                    store = RedisStore(rl.redis)
                elif local_store is not None:
                    store = local_store()
                hook = store_error(cfg.name) if store_error is not None else None
                limiter = RateLimiter(rl, cfg.name, store, on_store_error=hook)
        route.guard = RouteGuard(key_auth, limiter, trusted) if key_auth or limiter else None
    return [lim for lim in old.values() if id(lim) not in kept]
