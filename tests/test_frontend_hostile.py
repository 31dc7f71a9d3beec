"""The front doors under hostile JSON, over real sockets: a field of a type Ollama does
not take is Ollama's 400 `{"error": "…"}` (never a 500 from a converter that iterated
it); a bug in a door's own work is a 500 in that door's error shape with one ERROR
event and no traceback for the client; and a hypothesis property over the Ollama
door's bodies (every field of every endpoint set to any JSON value): no 5xx, errors
always JSON in Ollama's shape."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_bodies import dump, json_values
from fuzz_kit import DERANDOMIZE, LiveGateway, exchange, request
from helpers import route, target, url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import parse
from gateway.frontends import ollama_request
from gateway.server import GatewayServer
from gateway.sim import FakeUpstream

COMPLETIONS, EMBEDDINGS = "llm/v1/completions", "llm/v1/embeddings"
DOORS = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": ""}}
CONSUMERS = [{"username": "u", "keyauth_credentials": [{"key": "fuzz-key-0123"}]}]
HI = [{"role": "user", "content": "hi"}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def _routes(ollama: FakeUpstream, openai: FakeUpstream, llamacpp: FakeUpstream) -> list[Any]:
    """Models served only for chat (generate becomes a chat for them) by an Ollama
    (`chat-only`), an OpenAI (`oa-chat`) and a llama.cpp server (`raw-chat`, raw);
    `gen-model` for generate; two embedders; `secret-model` behind key-auth."""
    chat = [
        target(ollama, "/api/chat", name="chat-only"),
        target(openai, "/v1/chat/completions", fmt="openai", name="oa-chat"),
        target(
            llamacpp, "/completion", fmt="raw", name="raw-chat", options={"raw_flavor": "llamacpp"}
        ),
    ]
    secret = route(target(ollama, "/api/chat", name="secret-model"), path="/s", name="secret")
    secret["key_auth"] = {}
    return [
        route(*chat, path="/chat", name="chat"),
        secret,
        route(
            target(ollama, "/api/generate", route_type=COMPLETIONS, name="gen-model"),
            path="/gen",
            name="gen",
        ),
        route(
            target(ollama, "/api/embed", route_type=EMBEDDINGS, name="embed-model"),
            target(openai, "/v1/embeddings", fmt="openai", route_type=EMBEDDINGS, name="oa-embed"),
            path="/embed",
            name="embed",
        ),
    ]


async def _gateway(gateway: Any, upstream: Any) -> GatewayServer:
    ollama = await upstream(
        "ollama", models=("chat-only", "secret-model", "gen-model", "embed-model")
    )
    openai = await upstream("openai", models=("oa-chat", "oa-embed"))
    llamacpp = await upstream("llamacpp")
    return await gateway(*_routes(ollama, openai, llamacpp), consumers=CONSUMERS, frontends=DOORS)


# ------------------------------------------------------------------ type checks


TYPE_ERRORS = [
    # generate for a chat-only model: the converter turns `images` into image parts
    ("/api/generate", {"images": 1}, "images must be a list of base64 strings"),
    ("/api/generate", {"images": True}, "images must be a list of base64 strings"),
    ("/api/generate", {"images": 10**30}, "images must be a list of base64 strings"),
    ("/api/generate", {"images": PNG}, "images must be a list of base64 strings"),
    ("/api/generate", {"images": {"a": PNG}}, "images must be a list of base64 strings"),
    ("/api/generate", {"images": [PNG, 5]}, "images must be a list of base64 strings"),
    ("/api/generate", {"context": "1,2"}, "context must be a list of integers"),
    ("/api/generate", {"context": [1, 2.5]}, "context must be a list of integers"),
    ("/api/generate", {"system": ["a"]}, "system must be a string"),
    ("/api/generate", {"template": 1}, "template must be a string"),
    ("/api/generate", {"suffix": True}, "suffix must be a string"),
    ("/api/generate", {"raw": "yes"}, "raw must be a boolean"),
    ("/api/generate", {"stream": "false"}, "stream must be a boolean"),
    ("/api/generate", {"keep_alive": []}, 'keep_alive must be a duration ("5m") or a number of seconds'),
    ("/api/generate", {"think": 1}, "think must be a boolean or a string"),
    ("/api/generate", {"options": [1]}, "options must be an object"),
    ("/api/generate", {"options": {"stop": 5}}, "options.stop must be a string or a list of strings"),
    ("/api/generate", {"options": {"stop": ["a", 1]}}, "options.stop must be a string or a list of strings"),
    ("/api/generate", {"options": {"num_predict": "9"}}, "options.num_predict must be an integer"),
    ("/api/generate", {"options": {"temperature": True}}, "options.temperature must be a number"),
    ("/api/generate", {"options": {"num_ctx": 1.5}}, "options.num_ctx must be an integer"),
    ("/api/chat", {"tools": 1}, "tools must be a list of objects"),
    ("/api/chat", {"tools": [1]}, "tools must be a list of objects"),
    ("/api/chat", {"tools": {"type": "function"}}, "tools must be a list of objects"),
    ("/api/chat", {"keep_alive": {"m": 5}}, 'keep_alive must be a duration ("5m") or a number of seconds'),
    ("/api/chat", {"top_logprobs": "3"}, "top_logprobs must be an integer"),
    ("/api/chat", {"logprobs": 1}, "logprobs must be a boolean"),
    ("/api/chat", {"options": {"stop": {"a": 1}}}, "options.stop must be a string or a list of strings"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": 1}]}, "messages[0].images must be a list of base64 strings"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": True}]}, "messages[0].images must be a list of base64 strings"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": [7]}]}, "messages[0]: images must be base64 strings"),
    ("/api/embed", {"truncate": "yes"}, "truncate must be a boolean"),
    ("/api/embed", {"dimensions": "8"}, "dimensions must be an integer"),
    ("/api/embed", {"options": 1}, "options must be an object"),
    ("/api/embeddings", {"keep_alive": [1]}, 'keep_alive must be a duration ("5m") or a number of seconds'),
]  # fmt: skip
_BASE = {
    "/api/generate": {"model": "chat-only", "prompt": "hi", "stream": False},
    "/api/chat": {"model": "chat-only", "messages": HI, "stream": False},
    "/api/embed": {"model": "embed-model", "input": "hi"},
    "/api/embeddings": {"model": "embed-model", "prompt": "hi"},
}


@pytest.mark.parametrize(("path", "fields", "message"), TYPE_ERRORS)
async def test_a_field_of_the_wrong_type_is_ollamas_400(
    gateway, upstream, http, caplog, path: str, fields: dict[str, Any], message: str
) -> None:
    gw = await _gateway(gateway, upstream)
    body = {**_BASE[path], **fields}
    with caplog.at_level(logging.ERROR):
        async with http.post(url(gw, path), data=dump(body)) as resp:
            assert resp.status == 400, await resp.text()
            assert resp.headers["Content-Type"].startswith("application/json")
            assert await resp.json() == {"error": message}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_what_ollama_takes_still_passes(gateway, upstream, http) -> None:
    """The types the checks allow: images, context, keep_alive as text or seconds,
    think as a level, stop as a string or a list, integral and fractional numbers."""
    gw = await _gateway(gateway, upstream)
    bodies = [
        ("/api/generate", {"images": [PNG], "keep_alive": "5m", "think": "low"}),
        ("/api/generate", {"model": "gen-model", "context": [1, 2], "keep_alive": 0, "raw": True}),
        ("/api/generate", {"options": {"stop": "x", "num_predict": 4, "temperature": 1}}),
        ("/api/chat", {"options": {"stop": ["x"], "top_p": 0.5}, "keep_alive": -1.5, "think": True}),
        ("/api/chat", {"tools": [{"function": {"name": "f"}}], "images": 1}),  # not chat's
        ("/api/embed", {"truncate": True, "dimensions": 4, "keep_alive": "1h"}),
        ("/api/generate", {"images": None, "context": None, "options": None}),  # null: unsent
    ]  # fmt: skip
    for path, fields in bodies:
        async with http.post(url(gw, path), data=dump({**_BASE[path], **fields})) as resp:
            assert resp.status == 200, (path, fields, await resp.text())


# ------------------------------------------------------------------ a bug in a door


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("'int' object is not iterable (secret-detail)")


@pytest.mark.parametrize("where", ["convert", "listing"])
async def test_a_bug_in_the_ollama_door_is_a_500_in_its_shape(
    gateway, upstream, http, caplog, monkeypatch, where: str
) -> None:
    gw = await _gateway(gateway, upstream)
    if where == "convert":
        monkeypatch.setattr(ollama_request, "generate_as_chat", _boom)
        call = http.post(url(gw, "/api/generate"), json=_BASE["/api/generate"])
    else:
        monkeypatch.setattr(gw.catalog, "entries", _boom)
        call = http.get(url(gw, "/api/tags"))
    with caplog.at_level(logging.INFO):
        async with call as resp:
            assert resp.status == 500
            assert resp.headers["Content-Type"].startswith("application/json")
            text = await resp.text()
    assert json.loads(text) == {"error": "internal gateway error"}
    (record,) = _errors(caplog)
    assert record.event == "request.internal_error"  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.fields["frontend"] == "ollama"  # type: ignore[attr-defined]
    assert "secret-detail" not in text and "Traceback" not in text


@pytest.mark.parametrize("where", ["dispatch", "model"])
async def test_a_bug_in_the_openai_door_is_a_500_in_its_shape(
    gateway, upstream, http, caplog, monkeypatch, where: str
) -> None:
    gw = await _gateway(gateway, upstream)
    if where == "dispatch":
        monkeypatch.setattr(gw.catalog, "route_for", _boom)
        call = http.post(url(gw, "/v1/chat/completions"), json={"model": "x", "messages": HI})
    else:
        monkeypatch.setattr(gw.catalog, "entries", _boom)
        call = http.get(url(gw, "/v1/models/chat-only"))
    with caplog.at_level(logging.INFO):
        async with call as resp:
            assert resp.status == 500
            text = await resp.text()
    assert json.loads(text) == {"error": {"message": "internal gateway error"}}
    (record,) = _errors(caplog)
    assert record.event == "request.internal_error"  # type: ignore[attr-defined]
    assert record.fields["frontend"] == "openai"  # type: ignore[attr-defined]
    assert "secret-detail" not in text


# ------------------------------------------------------------------ property


class _Live(LiveGateway):
    async def _start(self) -> None:
        ups = [
            FakeUpstream(
                "ollama", models=("chat-only", "secret-model", "gen-model", "embed-model")
            ),
            FakeUpstream("openai", models=("oa-chat", "oa-embed")),
            FakeUpstream("llamacpp"),
        ]
        for up in ups:
            await up.start()
            self.upstreams.append(up)
        raw = {
            "server": {"port": 0, "status_port": 0, "client_body_timeout": 2},
            "frontends": DOORS,
            "consumers": CONSUMERS,
            "routes": _routes(*ups),
        }
        self.server = GatewayServer(parse(raw, {}))
        await self.server.start()
        self.port, self.status_port = self.server.port, self.server.status_port


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gw = _Live().start()
    yield gw
    gw.stop()


_images = st.lists(st.sampled_from([PNG, "data:image/png;base64,AAAA", "%%%", ""]), max_size=2)
_call = st.fixed_dictionaries(
    {"function": st.fixed_dictionaries({"name": st.just("f")}, optional={"arguments": json_values})}
)
_MESSAGE = {
    "role": st.sampled_from(["user", "assistant", "system", "tool"]),
    "content": st.text(max_size=10),
    "images": _images,
    "tool_calls": st.lists(_call, max_size=2),
    "tool_name": st.just("f"),
    "thinking": st.text(max_size=5),
}
_OPTIONS = {
    "num_predict": st.integers(1, 16),
    "temperature": st.floats(0, 2),
    "top_k": st.integers(1, 50),
    "stop": st.text(min_size=1, max_size=3) | st.lists(st.text(min_size=1, max_size=3)),
    "num_ctx": st.integers(1, 4096),
    "min_p": st.floats(0, 1),
    "mirostat": st.integers(0, 2),
}
_COMMON = {
    "stream": st.booleans(),
    "options": st.fixed_dictionaries({}, optional=_OPTIONS),
    "keep_alive": st.sampled_from(["5m", 0, -1, "1h"]),
    "think": st.booleans() | st.sampled_from(["low", "high"]),
    "format": st.sampled_from(["json", "", {"type": "object"}]),
}
# Every field each endpoint reads, with a plausible value.
_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "/api/chat": {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": _MESSAGE["role"]},
                optional={k: v for k, v in _MESSAGE.items() if k != "role"},
            ),
            max_size=3,
        ),
        "tools": st.lists(st.fixed_dictionaries({"function": json_values}), max_size=2),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 5),
        **_COMMON,
    },
    "/api/generate": {
        "prompt": st.text(max_size=10),
        "suffix": st.text(max_size=5),
        "system": st.text(max_size=5),
        "template": st.text(max_size=5),
        "raw": st.booleans(),
        "context": st.lists(st.integers(0, 100), max_size=3),
        "images": _images,
        **_COMMON,
    },
    "/api/embed": {
        "input": st.text(max_size=10) | st.lists(st.text(max_size=5), max_size=3),
        "truncate": st.booleans(),
        "dimensions": st.integers(1, 8),
        "options": _COMMON["options"],
        "keep_alive": _COMMON["keep_alive"],
    },
    "/api/embeddings": {"prompt": st.text(max_size=10), "options": _COMMON["options"]},
    "/api/show": {"name": st.sampled_from(["chat-only", "nope"])},
}


# Any JSON value, scalars often, and truthy ones (hypothesis leans to 0, "" and false,
# which `if field:` lets by): a wrong type is more often a number than a deep tree.
_anything = st.one_of(
    st.sampled_from([1, -1, True, 1.5, 10**30, "x", {"a": 1}, [1]]),
    st.booleans(),
    st.integers(),  # beyond 64 bits too (orjson reads those as floats)
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    json_values,
)
# Generation and embedding get the most examples; generate for a chat-only model most
# of all (its conversion iterates the most fields).
_PATHS = (
    ["/api/generate"] * 3
    + ["/api/chat"] * 3
    + ["/api/embed"] * 2
    + ["/api/embeddings", "/api/show"]
)
_CHAT_MODELS = ["chat-only", "chat-only:latest", "oa-chat", "raw-chat"]
_MODELS = {
    # chat models most: a generate request for one goes through generate_as_chat
    "/api/generate": st.sampled_from([*_CHAT_MODELS, "gen-model"]),
    "/api/chat": st.sampled_from([*_CHAT_MODELS, "secret-model", "nope"]),
    "/api/embed": st.sampled_from(["embed-model", "oa-embed", "chat-only"]),
    "/api/embeddings": st.sampled_from(["embed-model", "oa-embed"]),
    "/api/show": st.sampled_from([*_CHAT_MODELS, "gen-model", "embed-model", "secret-model", "nope"]),
}  # fmt: skip


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An endpoint and a plausible body with any of the fields it reads, then one or
    two of them (a top-level field, a message's or an option) set to any JSON value:
    one wrong field at a time gets past the checks before it, to the code that reads
    it."""
    path = draw(st.sampled_from(_PATHS))
    fields = _FIELDS[path]
    body = draw(st.fixed_dictionaries({}, optional=fields))
    # A model that resolves (or is merely unknown): the rest of the body is then read
    # to the end. A model of a wrong type stops at 400 first (test_fuzz_gateway's).
    body["model"] = draw(_MODELS[path])
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(["top", "top", "top", "message", "option"]))
        messages, options = body.get("messages"), body.get("options")
        if where == "message" and isinstance(messages, list) and messages:
            message = messages[draw(st.integers(0, len(messages) - 1))]
            if isinstance(message, dict):
                message[draw(st.sampled_from(sorted(_MESSAGE)))] = draw(_anything)
        elif where == "option" and isinstance(options, dict):
            options[draw(st.sampled_from(sorted(_OPTIONS)))] = draw(_anything)
        else:
            body[draw(st.sampled_from(sorted(fields)))] = draw(_anything)
    return path, body


# Bounded and the same examples every run (LLAMA_GATEWAY_FUZZ_RANDOM=1 draws new ones);
# LLAMA_GATEWAY_FUZZ_EXAMPLES raises the count, as for tests/test_fuzz_gateway.py.
_PROPERTY = settings(
    max_examples=int(os.environ.get("LLAMA_GATEWAY_FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(path: str, body: dict[str, Any], port: int) -> None:
    """No 5xx, no hang; an error is JSON in Ollama's shape, an answer whole."""
    ex = exchange(port, request("POST", path, [(b"Content-Type", b"application/json")], dump(body)))
    assert not ex.hang and not ex.truncated and ex.status is not None, ex.describe()
    assert ex.status < 500, ex.describe()
    ctype = ex.header("content-type") or ""
    if ex.status >= 300:
        assert ctype.startswith("application/json"), ex.describe()
        err = json.loads(ex.body)
        assert isinstance(err, dict) and isinstance(err.get("error"), str), ex.describe()
    elif ctype.startswith("application/x-ndjson"):
        lines = [json.loads(line) for line in ex.body.splitlines() if line.strip()]
        assert lines and all("error" not in line for line in lines), ex.describe()
    else:
        json.loads(ex.body)


@_PROPERTY
@given(req=_requests())
def test_ollama_bodies_never_get_a_5xx(live: LiveGateway, req: tuple[str, dict[str, Any]]) -> None:
    _check(*req, live.port)


# Wrong types a converter may trip on: truthy scalars (an int is not iterable), a
# number past 64 bits, a string (iterable, by character), an object, a list of numbers.
_WRONG = [1, True, 10**30, -1.5, "x", {"a": 1}, [1], [[]]]
_VALID = {
    "/api/generate": {"model": "chat-only", "prompt": "hi", "stream": False},
    "/api/chat": {"model": "chat-only", "messages": [{"role": "user", "content": "hi"}]},
    "/api/embed": {"model": "embed-model", "input": "hi"},
    "/api/embeddings": {"model": "embed-model", "prompt": "hi"},
    "/api/show": {"model": "chat-only"},
}


def test_every_field_of_every_endpoint_with_each_wrong_type(live: LiveGateway) -> None:
    """The sweep beside the property: each field an endpoint reads (a message's and
    each option too), one at a time, set to each of `_WRONG`, the rest valid."""
    for path, fields in _FIELDS.items():
        valid = _VALID[path]
        for value in _WRONG:
            for key in ("model", *fields):
                _check(path, {**valid, key: value}, live.port)
            if path == "/api/chat":
                for key in _MESSAGE:
                    message = {"role": "user", "content": "hi", key: value}
                    _check(path, {**valid, "messages": [message]}, live.port)
            if "options" in fields:
                for key in _OPTIONS:
                    _check(path, {**valid, "options": {key: value}}, live.port)
            if path == "/api/generate":  # generate_as_chat over each kind of server
                for model in ("oa-chat", "raw-chat", "gen-model"):
                    _check(path, {**valid, "model": model, "images": value}, live.port)
