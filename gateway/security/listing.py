"""What the front doors tell a client about models behind key-auth: a route with
key-auth lists its models only to a request whose key it accepts, and a stranger cannot
tell a protected model from one that does not exist.

When every listed model sits behind key-auth and the request's key opens none of
them, the listing is refused with that 401/403 instead of an empty list: an SDK user
with a wrong key should read "Unauthorized", not "no models".

A request for a model it may not see (unknown, or only behind routes whose key check
refuses it) from a client that no key-auth route lets in gets the 401 a protected
model would get, not "not found": the answer for `secret-model` and for `no-such-model`
is the same. A client whose key some route accepts (a consumer) still reads "not found"
and 403: it is known, and what it may use is listed to it anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from .keyauth import Rejected

if TYPE_CHECKING:
    from ..routing import Route


class Listed(Protocol):
    @property
    def route(self) -> Route: ...


def refusal(
    request: web.Request, route: Route, body: Mapping[str, Any] | None = None
) -> Rejected | None:
    """Why `request` may not see `route`'s models (None: it may). `body`: a request's
    parsed body, for a route whose key may be there (key_in_body)."""
    guard = route.guard
    if guard is None or guard.key_auth is None:
        return None
    try:
        guard.key_auth.authenticate(request.headers, request.query, body)
    except Rejected as exc:
        return exc
    return None


E = TypeVar("E", bound=Listed)


class Refusals:
    """`refusal` for one request, each route's key checked once however many entries,
    names and routes ask (a listing, a "not found" list, the stranger test)."""

    __slots__ = ("_body", "_request", "_verdicts")

    def __init__(self, request: web.Request, body: Mapping[str, Any] | None = None) -> None:
        self._request = request
        self._body = body
        self._verdicts: dict[int, Rejected | None] = {}

    def __call__(self, route: Route) -> Rejected | None:
        key = id(route)
        try:
            return self._verdicts[key]
        except KeyError:
            why = self._verdicts[key] = refusal(self._request, route, self._body)
            return why

    def opens(self, route: Route) -> bool:
        """A `keep` for `Catalog.names`: the routes whose models the request may see."""
        return self(route) is None

    def visible(self, entries: Sequence[E]) -> list[E]:
        """The entries the request may see; raises the refusal when there were some and
        it may see none of them (all behind key-auth)."""
        out = [e for e in entries if self(e.route) is None]
        if not out and entries:
            first = self(entries[0].route)
            if first is not None:
                raise first
        return out

    def stranger(self, routes: Iterable[Route]) -> Rejected | None:
        """The 401 for a request that no key-auth route among `routes` lets in (the
        first such route's, in config order): what it gets instead of "not found".
        None without key-auth routes (no key is checked then), or when some route knows
        the key (accepts it, or refuses it with 403: a consumer's)."""
        first: Rejected | None = None
        for route in routes:
            guard = route.guard
            if guard is None or guard.key_auth is None:
                continue
            why = self(route)
            if why is None or why.status != 401:
                return None
            if first is None:
                first = why
        return first
