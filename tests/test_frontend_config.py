"""The `frontends:` block (validation, off by default) and the catalog the front doors
dispatch by (gateway/frontends/catalog.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from helpers import route, target, url

from gateway.config import CHAT, COMPLETIONS, EMBEDDINGS, Config, ConfigError, load_text
from gateway.frontends import Catalog
from gateway.routing import Route, build_route

UPSTREAM = "http://127.0.0.1:11434"


def t(
    name: str | None = "llama2",
    route_type: str = CHAT,
    fmt: str = "ollama",
    path: str = "/api/chat",
    alias: str | None = None,
) -> dict[str, Any]:
    model: dict[str, Any] = {}
    if alias is not None:
        model["model_alias"] = alias
    options: dict[str, Any] = {}
    if fmt == "raw":
        options["raw_flavor"] = "llamacpp"
    return target(
        UPSTREAM + path, "", fmt=fmt, route_type=route_type, name=name, model=model, options=options
    )


def r(*targets: dict[str, Any], path: str = "/chat", name: str = "r") -> dict[str, Any]:
    return route(*targets, path=path, name=name)


def config(*routes: dict[str, Any], frontends: Any = None, with_frontends: bool = True) -> str:
    doc: dict[str, Any] = {"routes": list(routes)}
    if with_frontends:
        doc["frontends"] = (
            frontends if frontends is not None else {"openai": {"prefix": "/v1"}, "ollama": {}}
        )
    return yaml.safe_dump(doc)


def load(*routes: dict[str, Any], **kw: Any) -> Config:
    return load_text(config(*routes, **kw), {})


def errors(*routes: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(*routes, **kw)
    return info.value.errors


# ------------------------------------------------------------------ config


def test_off_by_default() -> None:
    cfg = load(r(t()), with_frontends=False)
    assert cfg.frontends.openai is None and cfg.frontends.ollama is None
    assert not cfg.frontends.enabled
    # Without front doors, route paths may be what a front door would serve.
    cfg = load(r(t(), path="/v1/chat/completions"), r(t(), path="/api/chat", name="o"),
               with_frontends=False)  # fmt: skip
    assert [x.paths for x in cfg.routes] == [("/v1/chat/completions",), ("/api/chat",)]


async def test_off_by_default_serves_no_front_door(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"))
    for method, path in (
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/tags"),
        ("POST", "/api/chat"),
        ("GET", "/api/version"),
    ):
        async with http.request(method, url(gw, path), json={"model": "llama2"}) as resp:
            assert resp.status == 404, path
            assert await resp.json() == {"error": {"message": "no route matched"}}
    assert up.generation_requests() == []


@pytest.mark.parametrize(
    ("frontends", "expected"),
    [
        ({"openai": {"prefix": "/v1"}}, ("/v1", None)),
        ({"openai": {}}, ("/v1", None)),  # the default prefixes
        ({"openai": True, "ollama": True}, ("/v1", "")),
        ({"ollama": {}}, (None, "")),
        ({"ollama": {"prefix": "/ollama"}, "openai": {"prefix": ""}}, ("", "/ollama")),
        ({"openai": {"prefix": "/a/b-c_d.e~f"}}, ("/a/b-c_d.e~f", None)),
        ({"openai": None, "ollama": False}, (None, None)),  # written out as off
    ],
)
def test_prefixes(frontends: dict[str, Any], expected: tuple[str | None, str | None]) -> None:
    cfg = load(r(t()), frontends=frontends)
    assert (cfg.frontends.openai, cfg.frontends.ollama) == expected


@pytest.mark.parametrize(
    ("frontends", "key"),
    [
        ({"openai": {"prefix": "v1"}}, "frontends.openai.prefix"),
        ({"openai": {"prefix": "/v1/"}}, "frontends.openai.prefix"),
        ({"openai": {"prefix": "/"}}, "frontends.openai.prefix"),
        ({"ollama": {"prefix": "/a b"}}, "frontends.ollama.prefix"),
        ({"ollama": {"prefix": "/a?b"}}, "frontends.ollama.prefix"),
        ({"ollama": {"prefix": "/a#b"}}, "frontends.ollama.prefix"),
        ({"ollama": {"prefix": "/a%20"}}, "frontends.ollama.prefix"),
        ({"ollama": {"prefix": "/a\tb"}}, "frontends.ollama.prefix"),
        ({"openai": {"prefix": 5}}, "frontends.openai.prefix"),
        ({"openai": {"path": "/v1"}}, "frontends.openai.path"),
        ({"anthropic": {}}, "frontends.anthropic"),
        ({"openai": "yes"}, "frontends.openai"),
        (["openai"], "frontends"),
    ],
)
def test_prefix_validation(frontends: Any, key: str) -> None:
    errs = errors(r(t()), frontends=frontends)
    assert len(errs) == 1, errs
    assert errs[0].startswith(key + ":"), errs


@pytest.mark.parametrize(
    ("frontends", "path", "door"),
    [
        ({"openai": {"prefix": "/v1"}}, "/v1/chat/completions", "openai"),
        ({"openai": {"prefix": "/v1"}}, "/v1/completions", "openai"),
        ({"openai": {"prefix": "/v1"}}, "/v1/embeddings", "openai"),
        ({"openai": {"prefix": "/v1"}}, "/v1/models", "openai"),
        ({"openai": {"prefix": ""}}, "/chat/completions", "openai"),
        ({"ollama": {}}, "/api/chat", "ollama"),
        ({"ollama": {}}, "/api/generate", "ollama"),
        ({"ollama": {}}, "/api/embed", "ollama"),
        ({"ollama": {}}, "/api/embeddings", "ollama"),
        ({"ollama": {}}, "/api/tags", "ollama"),
        ({"ollama": {}}, "/api/ps", "ollama"),
        ({"ollama": {}}, "/api/show", "ollama"),
        ({"ollama": {}}, "/api/version", "ollama"),
        ({"ollama": {"prefix": "/o"}}, "/o/api/chat", "ollama"),
    ],
)
def test_route_path_taken_by_a_front_door(frontends: Any, path: str, door: str) -> None:
    errs = errors(
        r(t(), path="/fine", name="a"), r(t("m2"), path=path, name="b"), frontends=frontends
    )
    assert len(errs) == 1, errs
    assert errs[0].startswith("routes[1].paths:"), errs
    assert repr(path) in errs[0] and f"frontends.{door}" in errs[0]


def test_route_paths_beside_the_front_doors_are_fine() -> None:
    frontends = {"openai": {"prefix": "/v1"}, "ollama": {"prefix": "/o"}}
    cfg = load(
        r(t(), path="/llama2/v1/chat/completions", name="a"),
        r(t(route_type=COMPLETIONS, path="/api/generate"), path="/api/generate", name="b"),
        r(t("m3"), path="/v2/chat/completions", name="c"),
        frontends=frontends,
    )
    assert len(cfg.routes) == 3


def test_a_model_claimed_twice_for_one_route_type() -> None:
    errs = errors(r(t(), name="first"), r(t(), path="/other", name="second"))
    assert len(errs) == 1, errs
    assert errs[0].startswith("routes[1]:"), errs
    assert "'llama2'" in errs[0] and "'first'" in errs[0]
    # An alias claims its name too.
    errs = errors(r(t(), name="first"), r(t("other", alias="llama2"), path="/o", name="second"))
    assert len(errs) == 1 and errs[0].startswith("routes[1]:"), errs
    # Only with front doors on: route paths never dispatch by model.
    assert (
        len(load(r(t(), name="a"), r(t(), path="/o", name="b"), with_frontends=False).routes) == 2
    )


def test_one_model_for_several_route_types_is_fine() -> None:
    cfg = load(
        r(t(), name="chat"),
        r(t(route_type=COMPLETIONS, path="/api/generate"), path="/gen", name="gen"),
        r(t(route_type=EMBEDDINGS, path="/api/embed"), path="/emb", name="emb"),
        # Two targets of one route naming the same model: that route's own balancing.
        r(t("two"), t("two"), path="/two", name="two"),
    )
    assert [x.name for x in cfg.routes] == ["chat", "gen", "emb", "two"]


def test_front_doors_that_share_a_path() -> None:
    errs = errors(r(t()), frontends={"openai": {"prefix": "/api"}, "ollama": {"prefix": ""}})
    assert errs == [
        "frontends: both front doors serve '/api/embeddings'; give one of them another prefix"
    ]


def test_route_path_below_the_model_lookup_is_unreachable() -> None:
    errs = errors(r(t(), path="/v1/models/foo"), frontends={"openai": {}})
    assert errs == [
        "routes[0].paths: path '/v1/models/foo' is served by the openai front door "
        "(frontends.openai); pick another path or another prefix"
    ]


# ------------------------------------------------------------------ catalog


def routes_of(*routes: dict[str, Any]) -> list[Route]:
    cfg = load(*routes)
    return [build_route(rc, time.monotonic) for rc in cfg.routes]


def test_catalog_named_and_alias() -> None:
    chat, gen, emb = routes_of(
        r(t("llama2", alias="fast"), name="chat"),
        r(t("llama2", route_type=COMPLETIONS), path="/gen", name="gen"),
        r(t("nomic", route_type=EMBEDDINGS), path="/emb", name="emb"),
    )
    cat = Catalog([chat, gen, emb])
    assert cat.route_for(CHAT, "llama2") == (chat, "llama2")
    assert cat.route_for(CHAT, "fast") == (chat, "fast")
    assert cat.route_for(COMPLETIONS, "llama2") == (gen, "llama2")
    assert cat.route_for(COMPLETIONS, "fast") == (None, None)
    assert cat.route_for(EMBEDDINGS, "nomic") == (emb, "nomic")
    assert cat.route_for(CHAT, "nomic") == (None, None)
    assert cat.route_for(CHAT, "gpt-4") == (None, None)
    assert cat.route_for(CHAT, 5) == (chat, None)  # not a model name: the only chat route
    assert cat.route_types() == {CHAT, COMPLETIONS, EMBEDDINGS}
    assert [(e.id, e.route_type, e.owned_by) for e in cat.entries()] == [
        ("fast", CHAT, "chat"),
        ("llama2", CHAT, "chat"),
        ("llama2", COMPLETIONS, "gen"),
        ("nomic", EMBEDDINGS, "emb"),
    ]
    assert cat.names() == ["fast", "llama2", "nomic"]
    assert cat.names(COMPLETIONS) == ["llama2"]


def test_catalog_latest_twins() -> None:
    (bare,) = routes_of(r(t("llama2"), name="bare"))
    (tagged,) = routes_of(r(t("mistral:latest"), name="tagged"))
    (sized,) = routes_of(r(t("qwen:7b"), name="sized"))
    cat = Catalog([bare, tagged, sized])
    # Ollama's `x` is `x:latest`: either spelling finds the route, which gets its own.
    assert cat.route_for(CHAT, "llama2:latest") == (bare, "llama2")
    assert cat.route_for(CHAT, "mistral") == (tagged, "mistral:latest")
    assert cat.route_for(CHAT, "mistral:latest") == (tagged, "mistral:latest")
    # Only `latest` is implied.
    assert cat.route_for(CHAT, "qwen:7b") == (sized, "qwen:7b")
    assert cat.route_for(CHAT, "qwen") == (None, None)
    assert cat.route_for(CHAT, "llama2:7b") == (None, None)


def test_catalog_unnamed_targets_and_discovery() -> None:
    known, unknown = routes_of(
        r(t(None), name="known"),
        r(t(None, path="/v1/chat/completions", fmt="openai"), path="/u", name="unknown"),
    )
    cat = Catalog([known, unknown])
    # Nothing discovered yet: any model may be there, the first such route takes it.
    assert cat.route_for(CHAT, "phi3") == (known, "phi3")
    assert cat.entries() == []

    # Discovery found phi3 (and its bare twin) on the first route's server.
    k = known.targets[0].state
    k.models_installed = frozenset({"phi3:latest", "phi3", "gemma"})
    k.models_loaded = frozenset({"gemma"})
    assert cat.route_for(CHAT, "phi3") == (known, "phi3")
    assert cat.route_for(CHAT, "gemma:latest") == (known, "gemma")
    # Not there: the route whose server's models are still unknown may have it.
    assert cat.route_for(CHAT, "llava") == (unknown, "llava")
    entries = cat.entries()
    assert [(e.id, e.owned_by, e.loaded) for e in entries] == [
        ("gemma", known.targets[0].name, True),
        ("phi3:latest", known.targets[0].name, False),
    ]
    assert all(e.route is known for e in entries)

    # Both known: a model neither has is nobody's.
    u = unknown.targets[0].state
    u.models_installed = frozenset({"llava"})
    assert cat.route_for(CHAT, "llava") == (unknown, "llava")
    assert cat.route_for(CHAT, "nope") == (None, None)
    assert cat.names() == ["gemma", "llava", "phi3:latest"]


def test_catalog_undiscoverable_unnamed_target_takes_any_model() -> None:
    """A raw llama.cpp server does not list models the catalog could use: its route
    takes any model name, even when a set is known."""
    (raw,) = routes_of(r(t(None, fmt="raw", path="/completion"), name="raw"))
    assert not raw.discovered
    raw.targets[0].state.models_installed = frozenset({"a"})
    cat = Catalog([raw])
    assert cat.route_for(CHAT, "anything") == (raw, "anything")


def test_catalog_named_before_unnamed() -> None:
    named, open_ = routes_of(r(t("llama2"), name="named"), r(t(None), path="/open", name="open"))
    cat = Catalog([open_, named])  # order does not matter for a named model
    assert cat.route_for(CHAT, "llama2") == (named, "llama2")
    assert cat.route_for(CHAT, "other") == (open_, "other")


def test_catalog_without_a_model() -> None:
    chat, gen1, gen2 = routes_of(
        r(t(), name="chat"),
        r(t(route_type=COMPLETIONS, path="/api/generate"), path="/g1", name="g1"),
        r(t("m2", route_type=COMPLETIONS, path="/api/generate"), path="/g2", name="g2"),
    )
    cat = Catalog([chat, gen1, gen2])
    # The only route of the type serves a request that names no model...
    assert cat.route_for(CHAT, None) == (chat, None)
    assert cat.route_for(CHAT, "") == (chat, None)
    # ...but of two, neither is chosen; and a type nobody serves has none.
    assert cat.route_for(COMPLETIONS, None) == (None, None)
    assert cat.route_for(EMBEDDINGS, None) == (None, None)
