"""`server.*` from the environment (LLAMA_GATEWAY_<KEY>): precedence, the file's checks,
errors that name the variable, and `llama-gateway check` seeing the same."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import route, target

from gateway.config import ConfigError, parse
from gateway.config._env import server_variables
from gateway.config.schema import ServerConfig

ROUTES = [route(target("http://127.0.0.1:9/api/chat", ""))]
# A valid value, other than the default, for each type a server key has.
SAMPLES: dict[Any, str] = {str: "0.0.0.0", int: "3", float: "2.5"}


def server(env: dict[str, str], file: dict[str, Any] | None = None) -> ServerConfig:
    raw: dict[str, Any] = {"routes": ROUTES}
    if file is not None:
        raw["server"] = file
    return parse(raw, env).server


def errors(env: dict[str, str], file: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        server(env, file)
    return exc.value.errors


def test_every_server_key_has_its_variable() -> None:
    names = server_variables()
    assert list(names) == [f.name for f in fields(ServerConfig)]
    for key, var in names.items():
        assert var == "LLAMA_GATEWAY_" + key.upper()
    assert names["port"] == "LLAMA_GATEWAY_PORT"
    assert names["status_host"] == "LLAMA_GATEWAY_STATUS_HOST"
    assert names["drain_timeout"] == "LLAMA_GATEWAY_DRAIN_TIMEOUT"


def test_each_variable_sets_its_key_over_the_file() -> None:
    hints = typing.get_type_hints(ServerConfig)
    for key, var in server_variables().items():
        if typing.get_origin(hints[key]) is tuple:  # a list: comma-separated in a variable
            got = getattr(server({var: "10.0.0.0/8, 127.0.0.1"}, {}), key)
            assert got == ("10.0.0.0/8", "127.0.0.1/32"), key
            continue
        kinds = typing.get_args(hints[key]) or (hints[key],)
        text = next(SAMPLES[k] for k in (int, float, str) if k in kinds)
        got = getattr(server({var: text}, {}), key)
        assert str(got) in (text, text + ".0") and got != getattr(ServerConfig(), key), key


def test_precedence_environment_over_file_over_default() -> None:
    assert server({}).port == 8000
    assert server({}, {"port": 7000}).port == 7000
    env = {"LLAMA_GATEWAY_PORT": "7100", "LLAMA_GATEWAY_DRAIN_TIMEOUT": "0.5"}
    s = server(env, {"port": 7000, "drain_timeout": 10, "status_port": 7001})
    assert (s.port, s.drain_timeout, s.status_port) == (7100, 0.5, 7001)
    # An empty variable is an unset one; spaces around a value do not count.
    assert server({"LLAMA_GATEWAY_PORT": ""}, {"port": 7000}).port == 7000
    assert server({"LLAMA_GATEWAY_PORT": " 7200 "}).port == 7200
    assert server({"LLAMA_GATEWAY_HOST": "::"}).host == "::"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "LLAMA_GATEWAY_PORT",
            "x",
            "LLAMA_GATEWAY_PORT: must be an integer, got 'x' (server.port)",
        ),
        ("LLAMA_GATEWAY_PORT", "1.5", "LLAMA_GATEWAY_PORT: must be an integer, got '1.5'"),
        (
            "LLAMA_GATEWAY_STATUS_PORT",
            "70000",
            "LLAMA_GATEWAY_STATUS_PORT: value must be >= 0 and <= 65535, got '70000'",
        ),
        (
            "LLAMA_GATEWAY_DRAIN_TIMEOUT",
            "-1",
            "LLAMA_GATEWAY_DRAIN_TIMEOUT: value must be >= 0, got '-1'",
        ),
        (
            "LLAMA_GATEWAY_DRAIN_TIMEOUT",
            "soon",
            "LLAMA_GATEWAY_DRAIN_TIMEOUT: must be a number, got 'soon'",
        ),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(var: str, value: str, message: str) -> None:
    (err,) = errors({var: value}, {"port": 7000})
    assert err.startswith(message)


def test_file_errors_keep_their_key_path() -> None:
    (err,) = errors({"LLAMA_GATEWAY_PORT": "7000"}, {"status_port": "x"})
    assert err == "server.status_port: must be an integer"
    # A `server` that is not a mapping is the file's error, whatever the environment.
    (err,) = errors({"LLAMA_GATEWAY_PORT": "7000"}, ["port"])
    assert err == "server: must be a mapping"


# --------------------------------------------------------------------------- the CLI


def run_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"server": {"port": 7000}, "routes": ROUTES}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(cfg)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_applies_the_environment(tmp_path: Path) -> None:
    ok = run_cli(tmp_path, "check", env={"LLAMA_GATEWAY_PORT": "8080"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("; from the environment: LLAMA_GATEWAY_PORT)")
    bad = run_cli(tmp_path, "check", env={"LLAMA_GATEWAY_PORT": "x"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "LLAMA_GATEWAY_PORT: must be an integer, got 'x' (server.port)" in bad.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LLAMA_GATEWAY_DRAIN_TIMEOUT": "-3"}, "LLAMA_GATEWAY_DRAIN_TIMEOUT: value must be"),
        ({"LLAMA_GATEWAY_LOG_LEVEL": "loud"}, "LLAMA_GATEWAY_LOG_LEVEL: must be one of"),
        ({"LLAMA_GATEWAY_LOG_FORMAT": "xml"}, "LLAMA_GATEWAY_LOG_FORMAT: must be one of"),
    ],
)
def test_serve_refuses_a_bad_variable_cleanly(tmp_path: Path, env, expected) -> None:
    proc = run_cli(tmp_path, "serve", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert expected in proc.stderr
