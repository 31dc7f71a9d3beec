"""What model listings show a client: a route with key-auth lists its models only to
a request whose key it accepts, so a listing does not tell strangers what is served.

When every listed model sits behind key-auth and the request's key opens none of
them, the listing is refused with that 401/403 instead of an empty list: an SDK user
with a wrong key should read "Unauthorized", not "no models".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from aiohttp import web

from .keyauth import Rejected

if TYPE_CHECKING:
    from ..routing import Route


class Listed(Protocol):
    @property
    def route(self) -> Route: ...


def refusal(request: web.Request, route: Route) -> Rejected | None:
    """Why `request` may not see `route`'s models (None: it may)."""
    guard = route.guard
    if guard is None or guard.key_auth is None:
        return None
    try:
        guard.key_auth.authenticate(request.headers, request.query)
    except Rejected as exc:
        return exc
    return None


E = TypeVar("E", bound=Listed)


def visible(request: web.Request, entries: Sequence[E]) -> list[E]:
    """The entries `request` may see; raises the refusal when there were some and it
    may see none of them (all behind key-auth)."""
    verdicts: dict[int, Rejected | None] = {}
    out: list[E] = []
    first: Rejected | None = None
    for e in entries:
        key = id(e.route)
        if key not in verdicts:
            verdicts[key] = refusal(request, e.route)
        why = verdicts[key]
        if why is None:
            out.append(e)
        elif first is None:
            first = why
    if not out and first is not None:
        raise first
    return out


def opens(request: web.Request) -> Callable[[Route], bool]:
    """A `keep` for `Catalog.names`: the routes whose models `request` may see."""
    verdicts: dict[int, bool] = {}

    def keep(route: Route) -> bool:
        key = id(route)
        if key not in verdicts:
            verdicts[key] = refusal(request, route) is None
        return verdicts[key]

    return keep
