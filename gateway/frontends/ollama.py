"""The Ollama front door: Ollama's own API, in front of any upstream format.

`/api/chat`, `/api/generate`, `/api/embed` (and the older `/api/embeddings`) are read
as Ollama reads them (streaming unless `"stream": false`), dispatched by model like the
OpenAI front door, and answered in Ollama's shapes (NDJSON streams, `done`,
`done_reason`, counts, durations in ns, `{"error": "…"}`). `/api/tags`, `/api/ps`,
`/api/show` and `/api/version` answer from the config and what discovery knows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import errors
from ..adapters.base import Call, Parsed, StreamDecoder
from ..config import CHAT, COMPLETIONS, EMBEDDINGS
from ..dialect import JSON, Dialect, upstream_error_text
from ..errors import GatewayError
from ..intake import read_body
from ..jsondepth import TOO_DEEP, too_deep
from ..jsonutil import JSONDecodeError, dumps, loads
from ..pipeline import Gateway, Prepared
from ..replies import Handler
from ..security.keyauth import Rejected
from ..security.listing import Refusals, refusal
from . import ollama_request as req
from .catalog import Catalog, ModelEntry, _twin, body_refusal, internal_error, no_count
from .ollama_response import (
    NDJSONStream,
    Timing,
    chat_answer,
    created_at,
    embed_answer,
    generate_answer,
    warm_up_answer,
)

if TYPE_CHECKING:
    from ..observe import RequestRecord

# The Ollama API version this front door follows (clients may check it).
OLLAMA_VERSION = "0.12.0"
# How Ollama names what a model cannot do ("x" does not support chat).
_KIND_WORDS = {
    "chat": "chat",
    "generate": "generate",
    "embed": "embeddings",
    "embeddings": "embeddings",
}


def ollama_error(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=dumps({"error": message}), content_type=JSON, headers=headers
    )


class OllamaDialect(Dialect):
    """One request's: which endpoint it came by decides the answer's shape."""

    name = "ollama"

    def __init__(self, kind: str, model: str) -> None:
        self.kind = kind  # chat | generate | embed | embeddings
        self.model = model  # as the client named it: Ollama answers echo it

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return ollama_error(status, message, headers)

    def upstream_error(self, status: int, body: bytes) -> tuple[bytes, bool]:
        text = upstream_error_text(body)[0] or f"upstream answered {status}"
        return dumps({"error": text}), True

    def answer(self, call: Call, parsed: Parsed, rec: RequestRecord) -> bytes:
        obj = loads(parsed.body)
        # Non-stream: the wait before the upstream was asked counts as prompt time, the
        # upstream's whole answer as generation time.
        sent = rec.started + (rec.proxy_latency or 0.0)
        timing = Timing(rec.started, sent, rec.started + (rec.ttft or 0.0))
        if self.kind == "chat":
            return dumps(chat_answer(obj, self.model, timing))
        if self.kind == "generate":
            return dumps(generate_answer(obj, self.model, timing))
        return dumps(embed_answer(obj, self.model, timing, self.kind == "embeddings"))

    def stream(
        self, call: Call, decoder: StreamDecoder, rec: RequestRecord, clock: Callable[[], float]
    ) -> StreamDecoder:
        return NDJSONStream(decoder, self.kind == "chat", self.model, rec.started, clock)


def _digest(name: str) -> str:
    """A stable id for a model name (not a hash of weights: the gateway has none)."""
    return hashlib.sha256(name.encode()).hexdigest()


def _details() -> dict[str, Any]:
    # What the gateway cannot know about a model behind it: honest empties.
    return {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


class OllamaFront:
    name = "ollama"  # the `frontend` metric label

    def __init__(
        self,
        prefix: str,
        catalog: Catalog,
        gateway: Callable[[], Gateway],
        body_limit: int,
        started: float,
        root: bool,
    ) -> None:
        self.prefix = prefix
        self.catalog = catalog
        self._gateway = gateway
        self.body_limit = body_limit
        self.modified_at = created_at(started)
        self.root = root  # serve `{prefix}/` ("Ollama is running"): no route path there
        self.rejected: Callable[[str], None] = no_count  # counts refusals by reason

    def paths(self) -> dict[str, Handler]:
        p = self.prefix + "/api"
        out: dict[str, Handler] = {
            p + "/chat": self._post(self.chat),
            p + "/generate": self._post(self.generate),
            p + "/embed": self._post(self.embed),
            p + "/embeddings": self._post(self.embeddings),
            p + "/show": self._post(self.show),
            p + "/tags": self._get(self.tags),
            p + "/ps": self._get(self.ps),
            p + "/version": self._get(self.version),
        }
        if self.root:
            out[self.prefix + "/"] = self._get(self.running)
        return out

    # ------------------------------------------------------------------ plumbing

    def _post(self, handler: Callable[[web.Request, dict[str, Any], bytes], Any]) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.method != "POST":
                self.rejected("method")
                return ollama_error(405, errors.method_not_allowed(request.method))
            try:
                raw = await read_body(request, self.body_limit)
            except GatewayError as exc:
                self.rejected(body_refusal(exc.status))
                return ollama_error(exc.status, exc.message)
            try:
                obj = loads(raw) if raw else None
            except JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                self.rejected("bad_request")
                return ollama_error(400, "invalid JSON body: expected an object")
            if too_deep(raw, obj):
                self.rejected("bad_request")
                return ollama_error(400, TOO_DEEP)
            try:
                resp: web.StreamResponse = await handler(request, obj, raw)
            except req.BadRequest as exc:
                self.rejected("bad_request")
                return ollama_error(400, str(exc))
            except GatewayError as exc:
                return ollama_error(exc.status, exc.message, exc.headers)
            except Exception:  # the pipeline answers its own; this is the door's bug
                return internal_error(self.name, request, ollama_error)
            return resp

        return wrapped

    def _get(self, handler: Callable[[web.Request], Any]) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.method not in ("GET", "HEAD"):
                self.rejected("method")
                return ollama_error(405, errors.method_not_allowed(request.method))
            try:
                resp: web.StreamResponse = await handler(request)
            except Exception:
                return internal_error(self.name, request, ollama_error)
            return resp

        return wrapped

    def _not_found(
        self,
        refused: Refusals,
        model: str,
        kind: str | None = None,
        types: tuple[str, ...] = (),
    ) -> web.Response:
        """404 listing the models for `types` (all models without) that this client may
        see. A model only other route types serve is Ollama's 400 `"x" does not support
        <kind>` instead. A model this client may not see at all, when no key-auth route
        lets it in, gets the 401 a protected model gets (see security/listing.py)."""
        keep = refused.opens
        everything = self.catalog.names(keep=keep)
        if not types:
            names = everything
        else:
            names = sorted({n for rt in types for n in self.catalog.names(rt, keep)})
            elsewhere = set(everything) - set(names)
            if model in elsewhere or _twin(model) in elsewhere:
                self.rejected("unsupported")
                return ollama_error(400, f"{dumps(model).decode()} does not support {kind}")
        self.rejected("unknown_model")
        why = refused.stranger(self.catalog.routes)  # None at once without key-auth
        if why is not None and model not in everything:
            return ollama_error(why.status, why.message, why.headers)
        listed = ", ".join(names) if names else "none"
        return ollama_error(404, f"model '{model}' not found; available: {listed}")

    async def _dispatch(
        self,
        request: web.Request,
        raw: bytes,
        conv: req.Converted,
        kind: str,
        obj: dict[str, Any],
    ) -> web.StreamResponse:
        """`obj`: the client's body as sent (key-auth's key_in_body looks there)."""
        model = conv.body["model"]
        route, name = self.catalog.route_for(conv.route_type, model)
        if route is None and conv.route_type == COMPLETIONS:
            # Ollama generates for every model; ours may only be served for chat.
            route, name = self.catalog.route_for(CHAT, model)
            if route is not None:
                conv = req.generate_as_chat(conv)
        if route is None:
            types = (COMPLETIONS, CHAT) if kind == "generate" else (conv.route_type,)
            return self._not_found(Refusals(request, obj), model, _KIND_WORDS[kind], types)
        if conv.warm_up:
            why = refusal(request, route, obj)  # the pipeline's key check is not reached
            if why is not None:
                return ollama_error(why.status, why.message, why.headers)
            return web.Response(body=dumps(warm_up_answer(kind, model)), content_type=JSON)
        if name is not None and name != model:
            conv.body["model"] = name
        if conv.stream_defaulted and route.cfg.response_streaming == "deny":
            # Ollama streams unless told not to; a route that never streams answers whole.
            conv.body["stream"] = False
            conv.body.pop("stream_options", None)
        prepared = Prepared(
            raw,
            conv.body,
            OllamaDialect(kind, model),
            conv.native_options,
            conv.native_fields,
            client_body=obj,
        )
        return await self._gateway().handle(request, route, prepared)

    # ------------------------------------------------------------------ generation

    async def chat(self, request: web.Request, obj: dict[str, Any], raw: bytes) -> Any:
        return await self._dispatch(request, raw, req.chat(obj), "chat", obj)

    async def generate(self, request: web.Request, obj: dict[str, Any], raw: bytes) -> Any:
        return await self._dispatch(request, raw, req.generate(obj), "generate", obj)

    async def embed(self, request: web.Request, obj: dict[str, Any], raw: bytes) -> Any:
        return await self._dispatch(request, raw, req.embed(obj, legacy=False), "embed", obj)

    async def embeddings(self, request: web.Request, obj: dict[str, Any], raw: bytes) -> Any:
        return await self._dispatch(request, raw, req.embed(obj, legacy=True), "embeddings", obj)

    # ------------------------------------------------------------------ model info

    def _model(self, e: ModelEntry) -> dict[str, Any]:
        return {
            "name": e.id,
            "model": e.id,
            "modified_at": self.modified_at,
            "size": 0,
            "digest": _digest(e.id),
            "details": _details(),
        }

    async def tags(self, request: web.Request) -> web.Response:
        try:
            entries = Refusals(request).visible(self.catalog.entries())
        except Rejected as exc:
            return ollama_error(exc.status, exc.message, exc.headers)
        models = [self._model(e) for e in self.catalog.unique(entries)]
        return web.Response(body=dumps({"models": models}), content_type=JSON)

    async def ps(self, request: web.Request) -> web.Response:
        """Models in memory as discovery saw them, and configured models (a configured
        name is served by a target that is up; its server's memory is not known)."""
        try:
            entries = Refusals(request).visible(self.catalog.entries())
        except Rejected as exc:
            return ollama_error(exc.status, exc.message, exc.headers)
        models = []
        for e in self.catalog.unique(entries):
            if e.loaded is False:
                continue
            if e.loaded is None and not any(t.state.healthy for t in e.route.targets):
                continue
            models.append({**self._model(e), "expires_at": None, "size_vram": 0})
        return web.Response(body=dumps({"models": models}), content_type=JSON)

    async def show(self, request: web.Request, obj: dict[str, Any], raw: bytes) -> Any:
        model = obj.get("model") or obj.get("name")
        if not isinstance(model, str) or not model:
            raise req.BadRequest("model is required")
        types = set()
        tools = False
        refusals = Refusals(request, obj)
        refused: Rejected | None = None
        for rt in (CHAT, COMPLETIONS, EMBEDDINGS):
            route, name = self.catalog.route_for(rt, model)
            if route is None or route.cfg.route_type != rt:
                continue
            why = refusals(route)
            if why is not None:  # behind key-auth, and this request's key does not open it
                refused = refused or why
                continue
            types.add(rt)
            known = name or model  # `x:latest` is the route's `x`
            serving = [
                t
                for t in route.targets
                if t.cfg.model.name in (None, known) or t.cfg.model.model_alias == known
            ]
            if rt == CHAT and any(t.adapter.format != "raw" for t in serving):
                tools = True  # Ollama and OpenAI servers take tools; raw ones cannot
        if not types:
            if refused is not None:
                return ollama_error(refused.status, refused.message, refused.headers)
            return self._not_found(refusals, model)
        capabilities = []
        if types & {CHAT, COMPLETIONS}:
            capabilities.append("completion")
        if tools:
            capabilities.append("tools")
        if EMBEDDINGS in types:
            capabilities.append("embedding")
        body = {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": _details(),
            "model_info": {},
            "capabilities": capabilities,
            "modified_at": self.modified_at,
        }
        return web.Response(body=dumps(body), content_type=JSON)

    async def version(self, request: web.Request) -> web.Response:
        return web.Response(body=dumps({"version": OLLAMA_VERSION}), content_type=JSON)

    async def running(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")
