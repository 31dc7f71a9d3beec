"""Config parsing and validation: typed result, defaults, key-path errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_kit import doc, target

from gateway.config import ConfigError, load_file, parse
from gateway.config.schema import ActiveHealthcheck, BalancerConfig

ROOT = Path(__file__).resolve().parent.parent


def errors_of(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(raw, env or {})
    return info.value.errors


def test_example_config_is_the_seed_case() -> None:
    cfg = load_file(str(ROOT / "config.example.yaml"))
    (route,) = cfg.routes
    assert route.name == "llama2-chat" and route.paths == ("/llama2-chat",)
    (t,) = route.targets
    assert t.model.provider == "llama2" and t.model.name == "llama2"
    assert t.options.llama2_format == "ollama"
    assert t.options.upstream_url.url == "http://127.0.0.1:11434/api/chat"
    assert t.name == "llama2@127.0.0.1:11434"


def test_example_multi_target_route_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = (ROOT / "config.example.yaml").read_text()
    head, marker, commented = text.partition("Uncomment and adapt the URLs.\n")
    assert marker, "the example keeps its commented multi-target route"
    lines = [head]
    for line in commented.splitlines():
        lines.append(line.replace("# ", "", 1) if line.startswith("  # ") else line)
    raw = yaml.safe_load("\n".join(lines))
    assert len(raw["routes"]) == 2, "the commented route must uncomment to a second route"
    cfg = parse(raw, {"VLLM_API_KEY": "sk-test"})
    pool = cfg.routes[1]
    assert [t.options.llama2_format for t in pool.targets] == ["ollama", "raw", "openai"]
    assert [t.weight for t in pool.targets] == [70, 25, 5]
    assert pool.targets[2].auth.header_value == "Bearer sk-test"
    assert pool.rate_limiting is not None and pool.rate_limiting.identifier == "ip"
    assert [(lim.kind, lim.limit) for lim in pool.rate_limiting.limits] == [
        ("requests", 60),
        ("tokens", 200000),
    ]


def test_defaults_follow_kong() -> None:
    route = parse(doc(), {}).routes[0]
    assert route.response_streaming == "allow"
    assert route.max_request_body_size == 1048576
    assert route.model_name_header is True
    assert route.balancer == BalancerConfig()
    b = route.balancer
    assert (b.algorithm, b.retries, b.slots, b.hash_on_header) == (
        "round-robin",
        5,
        10000,
        "X-Kong-LLM-Request-ID",
    )
    assert (b.connect_timeout, b.write_timeout, b.read_timeout) == (60000, 60000, 60000)
    assert b.failover_criteria == ("error", "timeout")
    assert (b.max_fails, b.fail_timeout) == (0, 10000)
    assert b.healthchecks == ActiveHealthcheck()
    t = route.targets[0]
    assert t.weight == 100 and t.auth.allow_override is False
    assert t.logging.log_statistics is False and t.logging.log_payloads is False


def test_server_defaults_and_overrides() -> None:
    raw = doc()
    raw["server"] = {"port": 9000, "drain_timeout": 2.5}
    s = parse(raw, {}).server
    assert (s.host, s.port, s.status_host, s.status_port, s.drain_timeout) == (
        "127.0.0.1",
        9000,
        "127.0.0.1",
        8100,
        2.5,
    )


def test_kong_required_option_messages() -> None:
    t = target()
    del t["model"]["options"]["llama2_format"]
    del t["model"]["options"]["upstream_url"]
    assert errors_of(doc(t)) == [
        "routes[0].config.targets[0].model.options: must set 'model.options.llama2_format' for llama2 provider",
        "routes[0].config.targets[0].model.options: must set 'model.options.upstream_url' for self-hosted providers/models",
    ]


def test_auth_all_or_none() -> None:
    errs = errors_of(doc(target(auth={"header_name": "Authorization"})))
    assert errs == [
        "routes[0].config.targets[0].auth: all or none of these fields must be set: "
        "'auth.header_name', 'auth.header_value'"
    ]
    errs = errors_of(doc(target(auth={"param_name": "key", "param_value": "v"})))
    assert errs == [
        "routes[0].config.targets[0].auth: all or none of these fields must be set: "
        "'auth.param_name', 'auth.param_value', 'auth.param_location'"
    ]


def test_unknown_keys_are_errors_with_paths() -> None:
    t = target(wieght=5)
    t["model"]["options"]["temprature"] = 0.5
    raw = doc(t)
    raw["routes"][0]["config"]["balancer"] = {"algoritm": "round-robin"}
    raw["server"] = {"prot": 1}
    assert sorted(errors_of(raw)) == sorted(
        [
            "server.prot: unknown key",
            "routes[0].config.balancer.algoritm: unknown key",
            "routes[0].config.targets[0].wieght: unknown key",
            "routes[0].config.targets[0].model.options.temprature: unknown key",
        ]
    )


def test_kong_keys_accepted_only_at_their_default() -> None:
    ok = doc(llm_format="openai", genai_category="text/generation", vectordb=None)
    ok["routes"][0]["config"]["targets"][0]["model"]["options"]["upstream_path"] = None
    parse(ok, {})
    bad = doc(llm_format="gemini")
    assert errors_of(bad) == ["routes[0].config.llm_format: not supported"]


def test_other_providers_rejected() -> None:
    t = target()
    t["model"]["provider"] = "openai"
    (err,) = errors_of(doc(t))
    assert err.startswith(
        "routes[0].config.targets[0].model.provider: provider 'openai' is not supported"
    )


def test_env_interpolation_and_missing_variable() -> None:
    t = target(auth={"header_name": "Authorization", "header_value": "Bearer ${TOKEN}"})
    cfg = parse(doc(t), {"TOKEN": "s3cret"})
    assert cfg.routes[0].targets[0].auth.header_value == "Bearer s3cret"
    assert "s3cret" not in repr(cfg), "secrets must not show in reprs (logs, tracebacks)"
    assert errors_of(doc(t)) == [
        "routes[0].config.targets[0].auth.header_value: environment variable TOKEN is not set"
    ]


def test_default_ports_by_scheme_and_target_names() -> None:
    a = target()
    a["model"]["options"]["upstream_url"] = "http://ollama.local/api/chat"
    b = target()
    b["model"]["options"]["upstream_url"] = "https://ollama.local/api/chat"
    c = target()
    del c["model"]["name"]
    d = target()  # same name and host:port as e → both get #n
    e = target()
    targets = parse(doc(a, b, c, d, e), {}).routes[0].targets
    assert targets[0].options.upstream_url.port == 80  # Kong would use 443 here
    assert targets[1].options.upstream_url.port == 443
    assert [t.name for t in targets] == [
        "llama2@ollama.local:80",
        "llama2@ollama.local:443",
        "-@127.0.0.1:11434",
        "llama2@127.0.0.1:11434#4",
        "llama2@127.0.0.1:11434#5",
    ]


def test_duplicate_explicit_target_names() -> None:
    errs = errors_of(doc(target(name="x"), target(name="x")))
    assert errs == ["routes[0].config.targets: duplicate target name 'x'"]


def test_targets_share_route_type() -> None:
    c = target(route_type="llm/v1/completions")
    errs = errors_of(doc(target(), c))
    assert errs == ["routes[0].config.targets: all targets of a route must share one route_type"]


def test_ranges_and_types() -> None:
    t = target(weight=0)
    o = t["model"]["options"]
    o.update(temperature=6, top_p=1.5, top_k=501, max_tokens="many")
    errs = errors_of(doc(t))
    p = "routes[0].config.targets[0]"
    assert errs == [
        f"{p}.model.options.max_tokens: must be an integer",
        f"{p}.model.options.temperature: value must be >= 0 and <= 5",
        f"{p}.model.options.top_p: value must be >= 0 and <= 1",
        f"{p}.model.options.top_k: value must be >= 0 and <= 500",
        f"{p}.weight: value must be >= 1 and <= 65535",
    ]


def test_unimplemented_algorithm_says_so() -> None:
    (err,) = errors_of(doc(balancer={"algorithm": "semantic"}))
    assert err.startswith("routes[0].config.balancer.algorithm: must be one of:")


def test_ai_proxy_single_target_shape() -> None:
    raw = {
        "routes": [
            {
                "name": "one",
                "paths": ["~/llama2-chat$"],
                "plugin": "ai-proxy",
                "config": {**target(), "response_streaming": "deny", "model_name_header": False},
            }
        ]
    }
    route = parse(raw, {}).routes[0]
    assert route.plugin == "ai-proxy" and len(route.targets) == 1
    assert route.response_streaming == "deny" and route.model_name_header is False


def test_raw_only_options_rejected_elsewhere() -> None:
    t = target()
    t["model"]["options"]["raw_flavor"] = "llamacpp"
    assert errors_of(doc(t)) == [
        "routes[0].config.targets[0].model.options.raw_flavor: only applies to llama2_format: raw"
    ]


def test_url_credentials_rejected() -> None:
    t = target()
    t["model"]["options"]["upstream_url"] = "http://user:pw@127.0.0.1:1/api/chat"
    (err,) = errors_of(doc(t))
    assert "pw" not in err and err.endswith(
        "must not contain credentials (use auth.header_* or auth.param_*)"
    )


def test_check_command_prints_every_error(tmp_path: Path) -> None:
    t = target()
    del t["model"]["options"]["llama2_format"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc(t, target(wieght=1))))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        "routes[0].config.targets[0].model.options: must set 'model.options.llama2_format'"
        in proc.stderr
    )
    assert "routes[0].config.targets[1].wieght: unknown key" in proc.stderr
    good = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(ROOT / "config.example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr


def test_auth_header_must_be_sendable() -> None:
    t = target(auth={"header_name": "X Key", "header_value": "Bearer s3cret\n"})
    assert errors_of(doc(t)) == [
        "routes[0].config.targets[0].auth.header_name: must be a valid HTTP header name",
        "routes[0].config.targets[0].auth.header_value: must not contain control characters "
        "(found LF at the end: a secret file's trailing newline?)",
    ]
