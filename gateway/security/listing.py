"""What model listings show a client: a route with key-auth lists its models only to
a request whose key it accepts, so a listing does not tell strangers what is served.

When every listed model sits behind key-auth and the request's key opens none of
them, the listing is refused with that 401/403 instead of an empty list: an SDK user
with a wrong key should read "Unauthorized", not "no models".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def _refusals(request: web.Request) -> Callable[[Route], Rejected | None]:
    """`refusal` for one request, each route's key checked once."""
    verdicts: dict[int, Rejected | None] = {}

    def why(route: Route) -> Rejected | None:
        key = id(route)
        if key not in verdicts:
            verdicts[key] = refusal(request, route)
        return verdicts[key]

    return why


E = TypeVar("E", bound=Listed)


def visible(request: web.Request, entries: Sequence[E]) -> list[E]:
    """The entries `request` may see; raises the refusal when there were some and it
    may see none of them (all behind key-auth)."""
    refused = _refusals(request)
    out = [e for e in entries if refused(e.route) is None]
    if not out and entries:
        first = refused(entries[0].route)
        if first is not None:
            raise first
    return out


def opens(request: web.Request) -> Callable[[Route], bool]:
    """A `keep` for `Catalog.names`: the routes whose models `request` may see."""
    refused = _refusals(request)
    return lambda route: refused(route) is None
