"""The OpenAI front door: `{prefix}/chat/completions`, `/completions`, `/embeddings`
dispatched by `model`, and `{prefix}/models`.

A request here is read and parsed once, its route found by model in the catalog, and
then handled by the pipeline exactly as if it had come in on that route's own path
(balancer, retries, metrics). Also the model listings for route paths: a route path
ending in `/chat/completions` or `/completions` gets a sibling `…/models`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import errors
from ..config import CHAT, COMPLETIONS, EMBEDDINGS
from ..dialect import JSON, OPENAI
from ..errors import GatewayError
from ..intake import read_body
from ..jsondepth import TOO_DEEP, too_deep
from ..jsonutil import JSONDecodeError, dumps, loads
from ..pipeline import Gateway, Prepared
from ..replies import Handler
from ..security.keyauth import Rejected
from ..security.listing import Refusals, refusal
from .catalog import Catalog, ModelEntry, body_refusal, guarded, no_count

if TYPE_CHECKING:
    from ..routing import Route

ENDPOINTS = {"/chat/completions": CHAT, "/completions": COMPLETIONS, "/embeddings": EMBEDDINGS}
_SUFFIXES = ("/chat/completions", "/completions")
_ALLOWED = {"Allow": "POST"}


def model_not_found(model: object, available: list[str]) -> web.Response:
    """OpenAI's own 404 for an unknown model, listing what there is."""
    name = model if isinstance(model, str) else dumps(model).decode()
    listed = ", ".join(available) if available else "none"
    body = {
        "error": {
            "message": f"The model '{name}' does not exist here; available models: {listed}",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    return web.Response(status=404, body=dumps(body), content_type=JSON)


def model_object(entry: ModelEntry, created: int) -> dict[str, Any]:
    return {"id": entry.id, "object": "model", "created": created, "owned_by": entry.owned_by}


def model_list(entries: list[ModelEntry], created: int) -> web.Response:
    data = [model_object(e, created) for e in entries]
    return web.Response(body=dumps({"object": "list", "data": data}), content_type=JSON)


class OpenAIFront:
    name = "openai"  # the `frontend` metric label

    def __init__(
        self,
        prefix: str,
        catalog: Catalog,
        gateway: Callable[[], Gateway],
        body_limit: int,
        created: int,
    ) -> None:
        self.prefix = prefix
        self.catalog = catalog
        self._gateway = gateway  # set when the server starts
        self.body_limit = body_limit  # the largest route limit (each route checks its own)
        self.created = created
        self.rejected: Callable[[str], None] = no_count  # counts refusals by reason
        # `{prefix}/models/{id}`, matched by prefix (the server asks for it by name).
        self.get_model: Handler = guarded(self.name, OPENAI.error, self._get_model)

    def paths(self) -> dict[str, Handler]:
        """Exact path → handler; `{prefix}/models/{id}` is `model_path` (see `get_model`)."""
        out: dict[str, Handler] = {
            self.prefix + path: self._endpoint(route_type)
            for path, route_type in ENDPOINTS.items()
            if route_type in self.catalog.route_types()
        }
        out[self.prefix + "/models"] = guarded(self.name, OPENAI.error, self.list_models)
        return out

    @property
    def model_path(self) -> str:
        return self.prefix + "/models/"

    def _endpoint(self, route_type: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.dispatch(request, route_type)

        # The pipeline answers its own errors; what escapes is the door's.
        return guarded(self.name, OPENAI.error, handler)

    async def dispatch(self, request: web.Request, route_type: str) -> web.StreamResponse:
        if request.method != "POST":
            self.rejected("method")
            return OPENAI.error(405, errors.method_not_allowed(request.method), _ALLOWED)
        try:
            raw = await read_body(request, self.body_limit)
        except GatewayError as exc:
            self.rejected(body_refusal(exc.status))
            return OPENAI.error(exc.status, exc.message)
        try:
            body = loads(raw) if raw else None
        except JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self.rejected("bad_request")
            no_valid = errors.NO_INPUT if route_type == EMBEDDINGS else errors.NO_PROMPTS
            return OPENAI.error(400, no_valid)
        if too_deep(raw, body):
            self.rejected("bad_request")
            return OPENAI.error(400, TOO_DEEP)
        model = body.get("model")
        route, name = self.catalog.route_for(route_type, model)
        if route is None:
            if model is None or model == "":
                self.rejected("bad_request")
                return OPENAI.error(400, errors.NO_MODEL)
            return self._not_found(model, Refusals(request, body), route_type)
        if name is not None and name != model:
            body["model"] = name  # `x` for `x:latest`: the name the route knows
        return await self._gateway().handle(request, route, Prepared(raw, body, OPENAI))

    def _not_found(
        self, model: object, refused: Refusals, route_type: str | None = None
    ) -> web.Response:
        """404 listing what this client may see; the 401 a protected model would get
        when no key-auth route lets the client in (a stranger), unless the model is one
        it may see (served for another endpoint): so an unknown model and one behind
        key-auth answer alike."""
        self.rejected("unknown_model")
        names = self.catalog.names(route_type, refused.opens)
        why = refused.stranger(self.catalog.routes)  # None at once without key-auth
        if why is not None and model not in self.catalog.names(keep=refused.opens):
            return OPENAI.error(why.status, why.message, why.headers)
        return model_not_found(model, names)

    async def list_models(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return OPENAI.error(405, errors.method_not_allowed(request.method), {"Allow": "GET"})
        try:
            entries = Refusals(request).visible(self.catalog.entries())
        except Rejected as exc:
            return OPENAI.error(exc.status, exc.message, exc.headers)
        return model_list(self.catalog.unique(entries), self.created)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return OPENAI.error(405, errors.method_not_allowed(request.method), {"Allow": "GET"})
        model = request.path[len(self.model_path) :]
        if not model:
            return await self.list_models(request)  # `{prefix}/models/`
        refused = Refusals(request)
        try:
            entries = refused.visible(self.catalog.entries())
        except Rejected as exc:
            return OPENAI.error(exc.status, exc.message, exc.headers)
        for e in entries:
            if e.id == model:
                body = dumps(model_object(e, self.created))
                return web.Response(body=body, content_type=JSON)
        return self._not_found(model, refused)


def sibling_lists(routes: list[Route], taken: set[str]) -> dict[str, Route]:
    """`…/models` for each route path ending in `/chat/completions` or `/completions`
    (what an OpenAI SDK with that route's base URL asks for), unless that path is taken."""
    out: dict[str, Route] = {}
    for r in routes:
        for p in r.cfg.paths:
            if p.startswith("~"):
                continue
            for suffix in _SUFFIXES:
                if p.endswith(suffix):
                    sibling = p[: -len(suffix)] + "/models"
                    if sibling not in taken:
                        out.setdefault(sibling, r)
                    break
    return out


def route_models(
    request: web.Request, route: Route, catalog: Catalog, created: int
) -> web.Response:
    why = refusal(request, route)
    if why is not None:
        return OPENAI.error(why.status, why.message, why.headers)
    return model_list(catalog.unique([e for e in catalog.entries() if e.route is route]), created)
