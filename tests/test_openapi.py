"""`GET /openapi.json` on the status listener: the proxy API's OpenAPI document, as
the running config makes it (tests/test_schemathesis.py sends what it describes)."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import schemathesis
from helpers import route, target
from schemathesis.specs.openapi.definitions import OPENAPI_30

from gateway import openapi
from gateway.config import parse
from gateway.server import GatewayServer

# The fixtures of tests/conftest.py (not importable by name: tests/real has its own).
GatewayFactory = Callable[..., Awaitable[GatewayServer]]
UpstreamFactory = Callable[..., Awaitable[Any]]

ERROR_CODES = ["400", "401", "403", "404", "413", "415", "429", "500", "502", "503", "504"]
SECRET_KEY = "consumer-key-sesame-4711"
SECRET_AUTH = "Bearer upstream-token-9f8e7d"


async def fetch(http: aiohttp.ClientSession, gw: GatewayServer) -> tuple[dict[str, Any], bytes]:
    async with http.get(f"http://127.0.0.1:{gw.status_port}/openapi.json") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        raw = await resp.read()
    return json.loads(raw), raw


def valid(doc: dict[str, Any]) -> None:
    """Valid by OpenAPI 3.0's own JSON Schema (the copy schemathesis ships), and
    loadable by schemathesis with every operation resolvable."""
    assert doc["openapi"].startswith("3.0.")
    jsonschema.Draft4Validator(OPENAPI_30).validate(doc)
    schema = schemathesis.openapi.from_dict(copy.deepcopy(doc))
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == sum(len(m) for m in doc["paths"].values())


def body_ref(op: dict[str, Any]) -> str:
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    ref: str = schema["allOf"][0]["$ref"] if "allOf" in schema else schema["$ref"]
    return ref.rsplit("/", 1)[1]


def models(op: dict[str, Any]) -> list[str] | None:
    """The `model` values the operation documents (None: any)."""
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    if "allOf" not in schema:
        return None
    enum: list[str] = schema["allOf"][1]["properties"]["model"]["enum"]
    return enum


def ok_types(op: dict[str, Any]) -> set[str]:
    return set(op["responses"]["200"]["content"])


async def test_routes_and_front_doors(
    gateway: GatewayFactory, upstream: UpstreamFactory, http: aiohttp.ClientSession
) -> None:
    up = await upstream("ollama", models=("llama2", "nomic-embed-text"))
    chat = route(target(up, "/api/chat"), path="/chat", name="chat")
    chat["paths"] += ["~^/re/", "/a{b}/v1/chat/completions"]
    deny = route(
        target(up, "/api/generate", route_type="llm/v1/completions", name="gen"),
        path="/gen",
        name="gen",
        response_streaming="deny",
    )
    emb = route(
        target(up, "/api/embed", route_type="llm/v1/embeddings", name="nomic-embed-text"),
        path="/emb",
        name="emb",
    )
    gw = await gateway(chat, deny, emb, frontends={"openai": True, "ollama": True})
    doc, _ = await fetch(http, gw)
    valid(doc)
    paths = doc["paths"]

    # Route paths by route type; the regex path cannot be listed and is named instead.
    assert body_ref(paths["/chat"]["post"]) == "ChatRequest"
    assert body_ref(paths["/gen"]["post"]) == "CompletionsRequest"
    assert body_ref(paths["/emb"]["post"]) == "EmbeddingsRequest"
    assert not any(p.startswith("~") or p.startswith("/re") for p in paths)
    assert "regular expressions" in doc["info"]["description"]
    assert "on route(s) chat" in doc["info"]["description"]
    # A literal brace is not a template: percent-encoded, and the gateway serves it.
    assert "/a%7Bb%7D/v1/chat/completions" in paths
    async with http.post(
        f"http://127.0.0.1:{gw.port}/a%7Bb%7D/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
    ) as resp:
        assert resp.status == 200
    assert set(paths["/a%7Bb%7D/v1/models"]) == {"get"}  # its model listing

    # Routes whose targets all name their model take those names only.
    assert models(paths["/chat"]["post"]) == ["llama2"]
    assert models(paths["/gen"]["post"]) == ["gen"]
    assert models(paths["/v1/chat/completions"]["post"]) == ["llama2"]
    assert models(paths["/v1/embeddings"]["post"]) == ["nomic-embed-text"]
    assert models(paths["/api/generate"]["post"]) == ["gen", "llama2"]  # chat routes too
    assert models(paths["/api/show"]["post"]) == ["gen", "llama2", "nomic-embed-text"]

    # Streams where a route may stream; none on a deny route or for embeddings.
    assert ok_types(paths["/chat"]["post"]) == {"application/json", "text/event-stream"}
    assert ok_types(paths["/gen"]["post"]) == {"application/json"}
    assert ok_types(paths["/emb"]["post"]) == {"application/json"}

    # Front doors: OpenAI's endpoints per route type present, Ollama's whole API.
    for p in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]:
        assert set(paths[p]) == {"post"}
    assert set(paths["/v1/models"]) == set(paths["/v1/models/{model}"]) == {"get"}
    assert paths["/v1/models/{model}"]["get"]["parameters"][0]["in"] == "path"
    for name in ["chat", "generate", "embed", "embeddings", "show"]:
        assert set(paths[f"/api/{name}"]) == {"post"}
    for name in ["tags", "ps", "version"]:
        assert set(paths[f"/api/{name}"]) == {"get"}
    assert "/" in paths  # "Ollama is running": no route at the root
    assert ok_types(paths["/api/chat"]["post"]) == {"application/json", "application/x-ndjson"}
    assert ok_types(paths["/v1/embeddings"]["post"]) == {"application/json"}

    # Every operation documents the error statuses, in its front door's shape.
    responses = doc["components"]["responses"]
    for path, methods in paths.items():
        for op in methods.values():
            shape = "OllamaError" if path.startswith("/api/") or path == "/" else "Error"
            for code in [*ERROR_CODES, "default"]:
                name = op["responses"][code]["$ref"].rsplit("/", 1)[1]
                schema = responses[name]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/" + shape), (path, code)
    assert doc["components"]["schemas"]["Error"]["properties"]["error"]["required"] == ["message"]
    assert "securitySchemes" not in doc["components"]
    assert "servers" not in doc  # port 0: the configured address says nothing
    ids = [op["operationId"] for m in paths.values() for op in m.values()]
    assert len(ids) == len(set(ids))


async def test_without_front_doors(
    gateway: GatewayFactory, upstream: UpstreamFactory, http: aiohttp.ClientSession
) -> None:
    up = await upstream("ollama")
    unnamed = target(up, "/api/chat", name=None)  # serves what its server has
    gw = await gateway(route(unnamed, path="/v1/chat/completions"))
    doc, _ = await fetch(http, gw)
    valid(doc)
    assert models(doc["paths"]["/v1/chat/completions"]["post"]) is None
    # The route path and the model listing next to it (an OpenAI SDK asks there).
    assert set(doc["paths"]) == {"/v1/chat/completions", "/v1/models"}
    assert not any(name.startswith("Ollama") for name in doc["components"]["schemas"])
    assert doc["info"]["description"].endswith("left out.")  # no regex paths here


async def test_key_auth_schemes_and_no_secrets(
    upstream: UpstreamFactory, http: aiohttp.ClientSession
) -> None:
    up = await upstream("ollama", models=("llama2", "open"))
    auth = {"header_name": "Authorization", "header_value": SECRET_AUTH}
    secure = route(target(up, "/api/chat", auth=auth), path="/secure", name="secure")
    secure["key_auth"] = {"key_names": ["apikey", "x-key"], "key_in_query": False}
    open_ = route(target(up, "/api/chat", name="open"), path="/open", name="open")
    raw_config = {
        "server": {"port": 0, "status_port": 0},
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": SECRET_KEY}]}],
        "frontends": {"openai": True},
        "routes": [secure, open_],
    }
    gw = GatewayServer(parse(raw_config, {}))
    await gw.start()
    try:
        doc, raw = await fetch(http, gw)
    finally:
        await gw.stop()
    valid(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {**schemes["bearer"], "type": "http", "scheme": "bearer"},
        "header.apikey": {"type": "apiKey", "in": "header", "name": "apikey"},
        "header.x-key": {"type": "apiKey", "in": "header", "name": "x-key"},
    }
    assert doc["paths"]["/secure"]["post"]["security"] == [
        {"bearer": []},
        {"header.apikey": []},
        {"header.x-key": []},
    ]
    assert "security" not in doc["paths"]["/open"]["post"]
    # By model, the OpenAI door reaches both routes: a key is optional there (`{}`).
    assert doc["paths"]["/v1/chat/completions"]["post"]["security"][0] == {}
    for secret in (SECRET_KEY, SECRET_AUTH, "upstream-token", str(up.port)):
        assert secret.encode() not in raw


async def test_built_once_per_runtime(
    gateway: GatewayFactory, upstream: UpstreamFactory, http: aiohttp.ClientSession
) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), path="/one"))
    first = openapi.document(gw.runtime)
    assert openapi.document(gw.runtime) is first  # not rebuilt per request
    _, a = await fetch(http, gw)
    _, b = await fetch(http, gw)
    assert a == b
    assert openapi.document(gw.runtime) is first
    # A reload is a new runtime: its own document.
    raw = {
        "server": {"port": 0, "status_port": 0},
        "routes": [route(target(up, "/api/chat"), path="/two")],
    }
    await gw.reload(parse(raw, {}))
    doc, _ = await fetch(http, gw)
    assert set(doc["paths"]) == {"/two"}


async def test_servers_from_the_configured_listener(upstream: UpstreamFactory) -> None:
    up = await upstream("ollama")
    raw = {
        "server": {"host": "::1", "port": 8123},
        "routes": [route(target(up, "/api/chat"), path="/chat")],
    }
    doc = openapi.build(GatewayServer(parse(raw, {})).runtime)  # not started: no sockets
    assert doc["servers"][0]["url"] == "http://[::1]:8123"
