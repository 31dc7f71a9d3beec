"""Property-based: whatever `parse`, `load_text` or `load_file` is given (random data,
a full config with random parts replaced, YAML-ish text, random bytes, random
environments), the answer is a Config or a ConfigError of messages that never hold a
secret: no other exception, ever (issue 15)."""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, ConfigError, load_file, load_text, parse

SECRET = "s3cr3t-t0ken-value"

# A document using every section, for mutations to start from: a random leaf or subtree
# replaced by a hostile value reaches validators a random document never would.
FULL: dict[str, Any] = {
    "server": {"port": 8000, "drain_timeout": 5, "workers": 1, "host": "127.0.0.1"},
    "consumers": [{"username": "alice", "keyauth_credentials": [{"key": SECRET + "-k"}]}],
    "frontends": {"openai": {"prefix": "/v1"}, "ollama": True},
    "routes": [
        {
            "name": "chat",
            "paths": ["/chat", "~/c[0-9]+"],
            "key_auth": {"key_names": ["apikey"]},
            "rate_limiting": {"limits": [{"requests": 10, "window": 60}]},
            "config": {
                "max_request_body_size": 1024,
                "balancer": {
                    "algorithm": "least-connections",
                    "retries": 2,
                    "hash_on_header": "X-User",
                    "failover_criteria": ["error", "http_503"],
                    "healthchecks": {"active": {"timeout": 1, "healthy": {"interval": 5}}},
                    "queue": {"max_size": 10, "timeout": 1000},
                },
                "targets": [
                    {
                        "route_type": "llm/v1/chat",
                        "weight": 10,
                        "model": {
                            "provider": "llama2",
                            "name": "llama3",
                            "model_alias": "l3",
                            "options": {
                                "llama2_format": "raw",
                                "raw_flavor": "llamacpp",
                                "upstream_url": "http://127.0.0.1:8080/completion",
                                "temperature": 0.5,
                                "max_tokens": 100,
                            },
                        },
                        "auth": {
                            "header_name": "Authorization",
                            "header_value": f"Bearer {SECRET}",
                        },
                    },
                    {
                        "route_type": "llm/v1/chat",
                        "model": {
                            "provider": "llama2",
                            "name": "llama3",
                            "options": {
                                "llama2_format": "openai",
                                "upstream_url": "https://vllm:8000/v1/chat/completions",
                            },
                        },
                        "auth": {
                            "param_name": "key",
                            "param_value": SECRET,
                            "param_location": "query",
                        },
                    },
                ],
            },
        }
    ],
}
ENV_NAMES = ["K", "LLAMA_GATEWAY_PORT", "LLAMA_GATEWAY_DRAIN_TIMEOUT", "LLAMA_GATEWAY_WORKERS"]
TEXTS = [
    "", "\r\n", "\x00", "\x01", "\x7f", "\x85", "\t", "nan", "-inf", "1" * 5000, "auto", "${K}",
    "${NOPE}", "~((((", "/ok", "http://h:1/x", "http://a b/", "Bearer x", "²", "X-Ok",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 2**53 + 1, 0, -1, 1, 65536]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(TEXTS),
    st.binary(max_size=4),
    st.dates(),
)
keys = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans(), st.floats())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
envs = st.dictionaries(st.sampled_from(ENV_NAMES), st.sampled_from(TEXTS) | st.text(max_size=8))


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) of `node`: the places a mutation can go."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in list(items):
        out.append((node, k))
        if isinstance(v, dict | list):
            _slots(v, out)
    return out


def _outcome(raw: Any, env: dict[str, str]) -> None:
    """The invariant: a Config, or a ConfigError of non-empty messages with no secret."""
    try:
        cfg = parse(raw, env)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
        assert SECRET not in "\n".join(exc.errors)
    else:
        assert isinstance(cfg, Config)


# CONFIG_FUZZ_EXAMPLES=20000 for a longer hunt; 200 keeps the quick suite quick (~3 s).
FUZZ = settings(
    max_examples=int(os.environ.get("CONFIG_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.data(), values, envs)
def test_fuzz_mutated_documents(data: st.DataObject, value: Any, env: dict[str, str]) -> None:
    raw = copy.deepcopy(FULL)
    for _ in range(data.draw(st.integers(1, 3))):
        slots = _slots(raw, [])
        container, key = data.draw(st.sampled_from(slots))
        if data.draw(st.booleans()) and isinstance(container, dict):
            container[data.draw(keys)] = copy.deepcopy(value)  # an extra key
        else:
            container[key] = copy.deepcopy(value)
    _outcome(raw, env)


@FUZZ
@given(values, envs)
def test_fuzz_random_structures(raw: Any, env: dict[str, str]) -> None:
    _outcome(raw, env)
    _outcome({"routes": raw, "server": raw, "frontends": raw, "consumers": raw}, env)


YAML_BITS = [
    "[", "]", "{", "}", ":", ": ", ",", "- ", "? ", "&a ", "*a", "!!int ", "!!binary ", "!!set ",
    "!!python/object ", "<<: ", "|", ">", "'", '"', "\\", "\\x01", "\\u0085", "#", "%YAML 1.1\n",
    "---\n", "...\n", "\n", "  ", "\t", "\x00", "\ufeff", "\x85", ".nan", ".inf", "0x_", "1" * 300,
    "2001-02-30", "~", "null", "routes", "server", "name", "paths", "config", "targets", "model",
]  # fmt: skip
BASE_TEXT = yaml.safe_dump(FULL)


@FUZZ
@given(st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=3), max_size=40).map("".join))
def test_fuzz_yaml_ish_text(text: str) -> None:
    for t in (text, BASE_TEXT + text):
        try:
            load_text(t, {})
        except ConfigError as exc:
            assert exc.errors and SECRET not in "\n".join(exc.errors)


@FUZZ
@given(st.integers(0, len(BASE_TEXT)), st.sampled_from(YAML_BITS) | st.text(max_size=4))
def test_fuzz_edited_yaml_text(at: int, insert: str) -> None:
    try:
        load_text(BASE_TEXT[:at] + insert + BASE_TEXT[at:], {})
    except ConfigError as exc:
        assert exc.errors and SECRET not in "\n".join(exc.errors)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_file_bytes(content: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".yaml") as fh:
        fh.write(content)
        fh.flush()
        try:
            load_file(fh.name)
        except ConfigError as exc:
            assert exc.errors
