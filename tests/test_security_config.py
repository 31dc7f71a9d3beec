"""`consumers`, `key_auth` and `rate_limiting`: defaults, and errors that name the key
path and never echo a key or a password."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, parse
from gateway.config.schema import KeyAuthConfig, RateLimit
from gateway.security.digest import digest

KEY = "k3y-that-must-stay-secret"


def doc(route_extra: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    t = {
        "route_type": "llm/v1/chat",
        "model": {
            "provider": "llama2",
            "name": "m",
            "options": {"llama2_format": "ollama", "upstream_url": "http://127.0.0.1:1/api/chat"},
        },
    }
    r = {"name": "r", "paths": ["/r"], "config": {"targets": [t]}, **(route_extra or {})}
    return {"routes": [r], **top}


CONSUMERS = [{"username": "alice", "keyauth_credentials": [{"key": KEY}]}]


def errors_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(raw, {})
    text = "\n".join(info.value.errors)
    assert KEY not in text and "pw-secret" not in text
    return info.value.errors


def test_defaults_and_digests_only():
    cfg = parse(
        doc(
            {"key_auth": {}, "rate_limiting": {"limits": [{"requests": 5, "window": 60}]}},
            consumers=CONSUMERS,
        ),
        {},
    )
    (c,) = cfg.consumers
    assert c.username == "alice" and c.key_digests == (digest(KEY),)
    assert KEY not in repr(cfg)  # the plaintext is not kept
    r = cfg.routes[0]
    assert r.key_auth == KeyAuthConfig(
        key_names=("apikey",),
        key_in_header=True,
        key_in_query=True,
        key_in_body=False,
        hide_credentials=True,
    )
    rl = r.rate_limiting
    assert rl is not None and rl.identifier == "consumer" and rl.strategy == "local"
    assert rl.limits == (RateLimit("requests", 5, 60),) and rl.fault_tolerant is True


def test_identifier_defaults_to_ip_without_key_auth():
    cfg = parse(doc({"rate_limiting": {"limits": [{"tokens": 5, "window": 60}]}}), {})
    assert cfg.routes[0].rate_limiting.identifier == "ip"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (doc({"key_auth": {}}), "routes[0].key_auth: no consumer has a key"),
        (
            doc(consumers=[*CONSUMERS, {"username": "bob", "keyauth_credentials": [{"key": KEY}]}]),
            "consumers[1].keyauth_credentials[0].key: the same key is already a credential of 'alice'",
        ),
        (
            doc(consumers=[*CONSUMERS, {"username": "alice"}]),
            "consumers[1].username: duplicate consumer 'alice'",
        ),
        (
            doc(consumers=[{"username": "a", "allowed_routes": ["nope"]}]),
            "consumers[0].allowed_routes: no route named 'nope'",
        ),
        (
            doc(consumers=[{"username": "a", "keyauth_credentials": [{"key": " x y"}]}]),
            "consumers[0].keyauth_credentials[0].key: must not contain spaces or control characters",
        ),
        (
            doc({"key_auth": {"key_names": ["bad name"]}}, consumers=CONSUMERS),
            "routes[0].key_auth.key_names: must be a non-empty list",
        ),
        (
            doc({"key_auth": {"anonymous": "guest"}}, consumers=CONSUMERS),
            "routes[0].key_auth.anonymous: not supported",
        ),
        (
            doc(
                {
                    "rate_limiting": {
                        "identifier": "consumer",
                        "limits": [{"requests": 1, "window": 1}],
                    }
                }
            ),
            "routes[0].rate_limiting.identifier: consumer needs key_auth",
        ),
        (
            doc({"rate_limiting": {"limits": []}}),
            "routes[0].rate_limiting.limits: must be a non-empty list",
        ),
        (
            doc({"rate_limiting": {"limits": [{"requests": 1, "tokens": 2, "window": 1}]}}),
            "routes[0].rate_limiting.limits[0]: needs exactly one of requests or tokens",
        ),
        (
            doc({"rate_limiting": {"limits": [{"requests": 1}]}}),
            "routes[0].rate_limiting.limits[0].window: required",
        ),
        (
            doc({"rate_limiting": {"limits": [{"requests": 0, "window": 1}]}}),
            "routes[0].rate_limiting.limits[0].requests: value must be >= 1",
        ),
        (
            doc(
                {
                    "rate_limiting": {
                        "limits": [{"requests": 1, "window": 60}, {"requests": 2, "window": 60}]
                    }
                }
            ),
            "routes[0].rate_limiting.limits[1]: a requests limit for a 60 s window is already set",
        ),
        (
            doc({"rate_limiting": {"limits": [{"requests": 1, "window": 1}], "strategy": "redis"}}),
            "routes[0].rate_limiting.redis.url: required",
        ),
        (
            doc(
                {
                    "rate_limiting": {
                        "limits": [{"requests": 1, "window": 1}],
                        "strategy": "redis",
                        "redis": {"url": "http://:pw-secret@h"},
                    }
                }
            ),
            "routes[0].rate_limiting.redis.url: must be a redis://, rediss:// or unix:// URL",
        ),
        (
            doc(
                {
                    "rate_limiting": {
                        "limits": [{"requests": 1, "window": 1}],
                        "redis": {"url": "redis://h"},
                    }
                }
            ),
            "routes[0].rate_limiting.redis: only used with strategy: redis",
        ),
    ],
)
def test_errors_name_the_key_path(raw, expected):
    assert any(e.startswith(expected) for e in errors_of(raw)), errors_of(raw)


def test_the_redis_password_is_a_route_secret():
    raw = doc(
        {
            "rate_limiting": {
                "limits": [{"requests": 1, "window": 1}],
                "strategy": "redis",
                "redis": {"url": "redis://:pw-secret@127.0.0.1:6379/0"},
            }
        }
    )
    route = parse(raw, {}).routes[0]
    assert "pw-secret" in route.secrets()
    assert "pw-secret" not in repr(route)
