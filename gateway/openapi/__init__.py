"""The OpenAPI document of the proxy listener's API, served at `GET /openapi.json` on
the status listener (built from the running config: route paths and front doors).

Built once per `Runtime` (a reload makes a new one) and kept while that runtime lives:
the status listener serves the same dict every time. It holds no secrets: paths, route
types, key names of key-auth, never key values or upstream addresses.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

from ..config import CHAT, COMPLETIONS, EMBEDDINGS, RouteConfig
from ..frontends.ollama import OLLAMA_VERSION
from ..frontends.openai import ENDPOINTS as _OPENAI_ENDPOINTS
from ..routing import Route
from ..runtime import Runtime
from . import ollama
from .schemas import BASE, Schema, ref

OPENAPI_VERSION = "3.0.3"
_JSON = "application/json"
_SSE = "text/event-stream"
_NDJSON = "application/x-ndjson"

# The gateway's own error statuses (docs/api.md, "Errors"); an upstream's error status
# reaches the client too, which is what `default` stands for.
_ERRORS = {
    "400": "the request is not one this route or endpoint can take",
    "401": "no valid client key (key-auth), or the upstream's own 401",
    "403": "the client's key may not use this route, or the upstream's own 403",
    "404": "no route, or no such model",
    "405": "method not allowed on this endpoint",
    "413": "request body over the route's `max_request_body_size`",
    "415": "request `Content-Encoding` other than identity",
    "429": "rate limited, or the admission queue is full",
    "500": "the upstream's answer could not be read",
    "502": "upstream unavailable",
    "503": "no healthy target, queued too long, or shutting down",
    "504": "upstream timed out",
}

_REQUEST = {CHAT: "ChatRequest", COMPLETIONS: "CompletionsRequest", EMBEDDINGS: "EmbeddingsRequest"}
_ANSWER = {CHAT: "ChatCompletion", COMPLETIONS: "TextCompletion", EMBEDDINGS: "EmbeddingList"}
_KIND = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}

_built: weakref.WeakKeyDictionary[Runtime, dict[str, Any]] = weakref.WeakKeyDictionary()


def document(runtime: Runtime) -> dict[str, Any]:
    """The document for `runtime`, built on first use. Callers must not mutate it."""
    doc = _built.get(runtime)
    if doc is None:
        doc = _built[runtime] = build(runtime)
    return doc


def build(runtime: Runtime) -> dict[str, Any]:
    b = _Builder(runtime)
    return b.finish()


# --------------------------------------------------------------------------- pieces


def _body(schema: str, models: list[str] | None = None) -> dict[str, Any]:
    """A JSON request body; `models`: the only `model` values the operation serves."""
    s = ref(schema)
    if models:
        only = {"properties": {"model": {"type": "string", "enum": models}}}
        s = {"allOf": [s, only]}
    return {"required": True, "content": {_JSON: {"schema": s}}}


def _models(routes: list[Route]) -> list[str] | None:
    """The model names these routes' targets are configured with; None when a target
    names none (it serves whatever its server has: not known in advance)."""
    if any(r.unnamed for r in routes):
        return None
    return sorted({name for r in routes for name in (*r.by_alias, *r.by_name)})


def _error_responses(with_ollama: bool) -> dict[str, Any]:
    """Shared responses (`components.responses`): one per status and error shape."""
    out: dict[str, Any] = {}
    shapes = [("", "Error")] + [("Ollama", "OllamaError")] * with_ollama
    for prefix, schema in shapes:
        body = {_JSON: {"schema": ref(schema)}}
        for code, text in _ERRORS.items():
            out[f"{prefix}Error{code}"] = {"description": text, "content": body}
        out[f"{prefix}ErrorOther"] = {
            "description": "an upstream's error status, passed on in this shape",
            "content": body,
        }
    return out


def _errors(schema: str) -> dict[str, Any]:
    prefix = "Ollama" if schema == "OllamaError" else ""
    out: dict[str, Any] = {
        code: {"$ref": f"#/components/responses/{prefix}Error{code}"} for code in _ERRORS
    }
    out["default"] = {"$ref": f"#/components/responses/{prefix}ErrorOther"}
    return out


def _ok(schema: Schema | str, stream: str | None = None, text: str = "the answer") -> Any:
    s = ref(schema) if isinstance(schema, str) else schema
    content: dict[str, Any] = {_JSON: {"schema": s}}
    if stream is not None:
        # A stream's events are JSON documents of the same kinds; the body is text.
        content[stream] = {"schema": {"type": "string"}}
    return {"description": text, "content": content}


def _streams(cfgs: list[RouteConfig]) -> bool:
    return any(c.route_type != EMBEDDINGS and c.response_streaming != "deny" for c in cfgs)


def _scheme(where: str, name: str) -> str:
    # Component names are limited to `[A-Za-z0-9._-]`; a header name may hold more.
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in name)
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{where}.{safe}"


_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "a consumer's key, as OpenAI SDKs send `api_key`",
}


def _key_schemes(cfg: RouteConfig) -> dict[str, Any]:
    """The ways a client may give its key on this route (none without key-auth):
    Bearer, and each key name in a header or the query, as configured."""
    ka = getattr(cfg, "key_auth", None)
    if ka is None:
        return {}
    out: dict[str, Any] = {"bearer": _BEARER}
    for name in getattr(ka, "key_names", ("apikey",)):
        for where in ("header", "query"):
            if getattr(ka, f"key_in_{where}", True):
                out[_scheme(where, name)] = {"type": "apiKey", "in": where, "name": name}
    return out


def _requirements(cfg: RouteConfig) -> list[dict[str, list[str]]]:
    """Any one of the route's schemes will do (OpenAPI: a list of alternatives)."""
    return [{name: []} for name in _key_schemes(cfg)]


class _Builder:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.cfgs = [r.cfg for r in runtime.routes]
        self.paths: dict[str, dict[str, Any]] = {}
        self.skipped: list[str] = []

    def add(self, path: str, method: str, op: dict[str, Any], literal: bool = True) -> None:
        if literal:
            # A configured `{` or `}` would read as a path template: sent
            # percent-encoded, the gateway decodes it back to the configured path.
            path = path.replace("{", "%7B").replace("}", "%7D")
        self.paths.setdefault(path, {})[method] = op

    def finish(self) -> dict[str, Any]:
        self.routes()
        self.model_lists()
        self.openai_door()
        self.ollama_door()
        info: dict[str, Any] = {
            "title": "llama-gateway",
            "version": "1",
            "description": self.description(),
        }
        doc: dict[str, Any] = {"openapi": OPENAPI_VERSION, "info": info}
        s = self.rt.config.server
        if s.port:
            host = f"[{s.host}]" if ":" in s.host else s.host
            doc["servers"] = [{"url": f"http://{host}:{s.port}", "description": "as configured"}]
        doc["paths"] = self.paths
        with_ollama = self.rt.config.frontends.ollama is not None
        components: dict[str, Any] = {
            "schemas": {**BASE, **ollama.COMPONENTS} if with_ollama else BASE,
            "responses": _error_responses(with_ollama),
        }
        schemes = {k: v for c in self.cfgs for k, v in _key_schemes(c).items()}
        if schemes:
            components["securitySchemes"] = schemes
        doc["components"] = components
        return doc

    def description(self) -> str:
        text = (
            "The proxy listener's API as configured: each route path (any method is "
            "accepted there, as in Kong; POST is what clients use), the model listings "
            "next to them, and the front doors that are on. Every error the gateway "
            'makes is `{"error": {"message": "…"}}` (the Ollama front door: '
            '`{"error": "…"}`). Route paths given as regular expressions (`~…`) cannot '
            "be listed and are left out"
        )
        if self.skipped:
            return f"{text}: {len(self.skipped)} here, on route(s) {', '.join(self.skipped)}."
        return text + "."

    # ------------------------------------------------------------------ routes

    def routes(self) -> None:
        for r in self.rt.routes:
            c = r.cfg
            for i, p in enumerate(c.paths):
                if p.startswith("~"):
                    if c.name not in self.skipped:
                        self.skipped.append(c.name)
                    continue
                kind = _KIND[c.route_type]
                stream = _SSE if _streams([c]) else None
                responses = {"200": _ok(_ANSWER[c.route_type], stream), **_errors("Error")}
                op: dict[str, Any] = {
                    "operationId": f"route.{c.name}.{i}",
                    "tags": ["routes"],
                    "summary": f"{kind} on route {c.name}",
                    "requestBody": _body(_REQUEST[c.route_type], _models([r])),
                    "responses": responses,
                }
                security = _requirements(c)
                if security:
                    op["security"] = security
                self.add(p, "post", op)

    def model_lists(self) -> None:
        for i, (path, route) in enumerate(self.rt.model_lists.items()):
            op = {
                "operationId": f"models.{i}.{route.name}",
                "tags": ["routes"],
                "summary": f"the models of route {route.name}",
                "responses": {"200": _ok("ModelList"), **_errors("Error")},
            }
            self.add(path, "get", op)

    # ------------------------------------------------------------------ front doors

    def of_types(self, *types: str) -> list[Route]:
        return [r for r in self.rt.routes if r.cfg.route_type in types]

    def door_security(self, types: tuple[str, ...]) -> list[dict[str, list[str]]]:
        """A front-door request reaches a route by model: a key is needed as that
        route says. Optional (`{}`) when some route of these types has no key-auth."""
        cfgs = [c for c in self.cfgs if c.route_type in types]
        needs = [_requirements(c) for c in cfgs]
        if not any(needs):
            return []
        out: list[dict[str, list[str]]] = [] if all(needs) else [{}]
        for reqs in needs:
            out.extend(x for x in reqs if x not in out)
        return out

    def openai_door(self) -> None:
        prefix = self.rt.config.frontends.openai
        if prefix is None:
            return
        for suffix, rtype in _OPENAI_ENDPOINTS.items():
            path = prefix + suffix
            if path not in self.rt.doors:
                continue  # no route of that type
            of_type = [c for c in self.cfgs if c.route_type == rtype]
            stream = _SSE if _streams(of_type) else None
            op: dict[str, Any] = {
                "operationId": f"openai.{_KIND[rtype]}",
                "tags": ["openai"],
                "summary": f"OpenAI {_KIND[rtype]}, routed by `model`",
                "requestBody": _body(_REQUEST[rtype], _models(self.of_types(rtype))),
                "responses": {"200": _ok(_ANSWER[rtype], stream), **_errors("Error")},
            }
            security = self.door_security((rtype,))
            if security:
                op["security"] = security
            self.add(path, "post", op)
        self.add(
            prefix + "/models",
            "get",
            {
                "operationId": "openai.models",
                "tags": ["openai"],
                "summary": "every model the routes serve",
                "responses": {"200": _ok("ModelList"), **_errors("Error")},
            },
        )
        self.add(
            prefix + "/models/{model}",
            "get",
            {
                "operationId": "openai.model",
                "tags": ["openai"],
                "summary": "one model",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _ok("Model"), **_errors("Error")},
            },
            literal=False,
        )

    def ollama_door(self) -> None:
        prefix = self.rt.config.frontends.ollama
        if prefix is None:
            return
        api = prefix + "/api"
        gen = (CHAT, COMPLETIONS)
        stream = _NDJSON if _streams([c for c in self.cfgs if c.route_type in gen]) else None
        posts = {
            "chat": ("OllamaChatRequest", _ok("OllamaChatResponse", stream), (CHAT,)),
            "generate": ("OllamaGenerateRequest", _ok("OllamaGenerateResponse", stream), gen),
            "embed": ("OllamaEmbedRequest", _ok("OllamaEmbedResponse"), (EMBEDDINGS,)),
            "embeddings": (
                "OllamaEmbeddingsRequest",
                _ok("OllamaEmbeddingsResponse"),
                (EMBEDDINGS,),
            ),
            "show": ("OllamaShowRequest", _ok("OllamaShowResponse"), ()),
        }
        for name, (request, ok, types) in posts.items():
            op: dict[str, Any] = {
                "operationId": f"ollama.{name}",
                "tags": ["ollama"],
                "summary": f"Ollama /api/{name}",
                # /api/show answers for a model of any route (and is not a route's
                # request: no key needed).
                "requestBody": _body(request, _models(self.of_types(*types) or self.rt.routes)),
                "responses": {"200": ok, **_errors("OllamaError")},
            }
            security = self.door_security(types)
            if security:
                op["security"] = security
            self.add(f"{api}/{name}", "post", op)
        gets = {
            "tags": _ok("OllamaModels", text="every model the routes serve"),
            "ps": _ok("OllamaModels", text="models in memory (as far as known)"),
            "version": _ok("OllamaVersion", text=f"Ollama API version {OLLAMA_VERSION}"),
        }
        for name, ok in gets.items():
            op = {
                "operationId": f"ollama.{name}",
                "tags": ["ollama"],
                "summary": f"Ollama /api/{name}",
                "responses": {"200": ok, **_errors("OllamaError")},
            }
            self.add(f"{api}/{name}", "get", op)
        root = prefix + "/"
        if root in self.rt.doors:
            running = {
                "description": "Ollama is running",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
            op = {
                "operationId": "ollama.root",
                "tags": ["ollama"],
                "summary": "liveness as Ollama clients check it",
                "responses": {"200": running, **_errors("OllamaError")},
            }
            self.add(root, "get", op)
