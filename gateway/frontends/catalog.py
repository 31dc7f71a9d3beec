"""Which route serves a model: the front doors' dispatch table and model listings.

Built once at startup from the routes: a model named by a target (`model.name` or
`model_alias`) belongs to that target's route for its route type (the config check
makes that unique). Routes with targets that name no model serve what their servers
have: the models discovery found there, or, while a server's models are unknown, any
model. Listings show the named models and the discovered ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .. import errors
from ..discovery import display_names
from ..errors import GatewayError
from ..logs import event

if TYPE_CHECKING:
    from ..replies import Handler
    from ..routing import Route

LATEST = ":latest"
log = logging.getLogger("llama_gateway")
# A door's gateway-made error answer: (status, message, headers) → its own shape.
ErrorShape = Callable[[int, str, Mapping[str, str] | None], web.Response]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    route: Route
    route_type: str
    owned_by: str  # the route for a configured name, the target for a discovered one
    loaded: bool | None = None  # discovery says it is in memory; None: not known


def _twin(model: str) -> str | None:
    """Ollama resolves `x` to `x:latest`: the other spelling of the same model."""
    if model.endswith(LATEST):
        return model[: -len(LATEST)]
    if ":" not in model:
        return model + LATEST
    return None


class Catalog:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self._named: dict[tuple[str, str], Route] = {}
        self._open: dict[str, list[Route]] = {}  # route type → routes with unnamed targets
        self._by_type: dict[str, list[Route]] = {}
        for r in routes:
            rt = r.cfg.route_type
            self._by_type.setdefault(rt, []).append(r)
            for name in (*r.by_alias, *r.by_name):
                self._named.setdefault((rt, name), r)
            if r.unnamed:
                self._open.setdefault(rt, []).append(r)

    def route_types(self) -> set[str]:
        return set(self._by_type)

    def route_for(self, route_type: str, model: object) -> tuple[Route | None, str | None]:
        """The route for `model` and the model's name as that route knows it (Ollama's
        `x` and `x:latest` are one model). Without a model: the only route of the type."""
        if not isinstance(model, str) or not model:
            routes = self._by_type.get(route_type, [])
            return (routes[0], None) if len(routes) == 1 else (None, None)
        twin = _twin(model)
        for name in (model, twin):
            if name is not None and (route_type, name) in self._named:
                return self._named[(route_type, name)], name
        fallback: Route | None = None
        for r in self._open.get(route_type, ()):
            for s in r.unnamed:
                if s.models_installed is None or not r.discovered:
                    fallback = fallback or r  # its models are unknown: any may be there
                elif model in s.models_installed:
                    return r, model
                elif twin is not None and twin in s.models_installed:
                    return r, twin
        return fallback, model if fallback is not None else None

    def entries(self, route_type: str | None = None) -> list[ModelEntry]:
        """Every model a front door can dispatch, once per (model, route type), in
        route order; configured names first, then discovered ones."""
        out: list[ModelEntry] = []
        seen: set[tuple[str, str]] = set()

        def add(entry: ModelEntry) -> None:
            key = (entry.id, entry.route_type)
            if key not in seen:
                seen.add(key)
                out.append(entry)

        for r in self.routes:
            rt = r.cfg.route_type
            if route_type is not None and rt != route_type:
                continue
            for t in r.targets:
                m = t.cfg.model
                for name in (m.model_alias, m.name):
                    if name:
                        add(ModelEntry(name, r, rt, r.name))
            for s in r.unnamed:
                if s.models_installed is None:
                    continue
                loaded = s.models_loaded or frozenset()
                for name in display_names(s.models_installed):
                    add(ModelEntry(name, r, rt, s.name, name in loaded))
        return out

    def unique(self, entries: list[ModelEntry] | None = None) -> list[ModelEntry]:
        """`entries` (default: all) once per model id, whichever route types serve it:
        what a listing shows."""
        seen: set[str] = set()
        out = []
        for e in self.entries() if entries is None else entries:
            if e.id not in seen:
                seen.add(e.id)
                out.append(e)
        return out

    def names(
        self, route_type: str | None = None, keep: Callable[[Route], bool] | None = None
    ) -> list[str]:
        """Distinct model ids, sorted (for "not found" messages); with `keep`, only
        those of the routes it keeps (what this client may see)."""
        return sorted({e.id for e in self.entries(route_type) if keep is None or keep(e.route)})


def body_refusal(status: int) -> str:
    """The front-door rejection reason of a body that could not be read: too large
    (413), too slow (408: client_body_timeout), or broken framing (400)."""
    return {413: "too_large", 408: "body_timeout"}.get(status, "bad_request")


def no_count(reason: str) -> None:
    """A front door's rejection counter until the server wires in the metrics."""


def internal_error(door: str, request: web.Request, shape: ErrorShape) -> web.Response:
    """A bug in a front door's own work (reading, converting, choosing the route): one
    ERROR event with the traceback in the log, and a 500 in the door's error shape with
    no trace of it (not aiohttp's fallback, which has another door's shape). Call it
    from an `except` block."""
    event(log, "request.internal_error", f"internal error on the {door} front door",
          level=logging.ERROR, exc_info=True, frontend=door, path=request.path)  # fmt: skip
    return shape(500, errors.INTERNAL, None)


def guarded(door: str, shape: ErrorShape, handler: Handler) -> Handler:
    """`handler` with its errors answered in the door's shape: a `GatewayError` as
    itself, anything else as `internal_error`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return shape(exc.status, exc.message, exc.headers)
        except Exception:
            return internal_error(door, request, shape)

    return wrapped
