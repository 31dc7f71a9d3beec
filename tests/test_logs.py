"""The process log: JSON and text lines, settings from flags and the environment, and
the events a running gateway logs (health changes, circuit transitions, discovery)."""

from __future__ import annotations

import io
import json
import logging
import socket
from typing import Any

import pytest
from helpers import route, target, until, url
from log_kit import SECRET, json_log

from balancers import TargetState
from gateway import logs
from gateway.config import parse
from gateway.discovery import Discovery, server_spec
from gateway.sim import Behaviour

CHAT = [{"role": "user", "content": "hi"}]


def line_of(fmt: str, emit: Any) -> str:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.JSONFormatter() if fmt == "json" else logs.TextFormatter())
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return buf.getvalue()


def test_json_line_has_the_fixed_keys_then_the_fields() -> None:
    out = line_of(
        "json",
        lambda lg: logs.event(
            lg,
            "target.health_changed",
            "went down",
            level=logging.WARNING,
            route="r",
            from_="healthy",  # a keyword as a field name
            to="unhealthy",
            ts="not this",  # a field never replaces a fixed key
            n=2,
            names=["a", "b"],
        ),
    )
    assert out.endswith("\n") and out.count("\n") == 1, "one object per line"
    doc = json.loads(out)
    assert list(doc)[:5] == ["ts", "level", "logger", "event", "msg"]
    assert doc["level"] == "WARNING" and doc["logger"] == "test.logs"
    assert doc["event"] == "target.health_changed" and doc["msg"] == "went down"
    assert doc["route"] == "r" and doc["from"] == "healthy" and doc["to"] == "unhealthy"
    assert doc["n"] == 2 and doc["names"] == ["a", "b"]
    assert doc["ts"] != "not this"
    # RFC 3339, UTC, milliseconds
    assert len(doc["ts"]) == 24 and doc["ts"][10] == "T" and doc["ts"].endswith("Z")


def test_process_context_is_on_every_line_in_both_formats() -> None:
    """A worker's lines carry `worker` (logs.set_context), plain records too; an
    event's own field of that name wins."""
    logs.set_context(worker=3)
    try:
        plain = json.loads(line_of("json", lambda lg: lg.warning("plain")))
        assert plain["worker"] == 3 and list(plain)[:5] == list(logs.FIXED)
        own = json.loads(line_of("json", lambda lg: logs.event(lg, "x", worker=1)))
        assert own["worker"] == 1
        assert line_of("text", lambda lg: lg.info("hello")).rstrip().endswith(" worker=3")
        text = line_of("text", lambda lg: logs.event(lg, "x", "m", worker=1)).rstrip()
        assert text.endswith("event=x worker=1")
    finally:
        logs._CONTEXT.clear()


def test_json_plain_records_and_tracebacks() -> None:
    def emit(lg: logging.Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            lg.exception("it failed on %s", "x")

    doc = json.loads(line_of("json", emit))
    assert doc["event"] is None and doc["msg"] == "it failed on x" and doc["level"] == "ERROR"
    assert "ValueError: boom" in doc["exc"]
    # A value JSON has no type for still gives a line.
    doc = json.loads(line_of("json", lambda lg: logs.event(lg, "x", obj=object())))
    assert doc["obj"].startswith("<object object")


def test_text_line_is_readable_with_the_event_and_fields() -> None:
    out = line_of(
        "text",
        lambda lg: logs.event(lg, "drain.finished", "drain finished", cut=0, why="a b", ok=True),
    )
    head, _, rest = out.strip().partition(" INFO test.logs: ")
    assert head.endswith("Z") and "T" in head
    assert rest == 'drain finished event=drain.finished cut=0 why="a b" ok=true'


def test_event_below_the_level_is_not_logged() -> None:
    assert line_of("json", lambda lg: logs.event(lg, "x", level=logging.DEBUG - 1)) == ""


def test_settings_flag_then_environment_then_default() -> None:
    assert logs.resolve(None, None, {}) == ("text", "INFO")
    env = {logs.ENV_FORMAT: "JSON", logs.ENV_LEVEL: "debug"}
    assert logs.resolve(None, None, env) == ("json", "DEBUG")
    assert logs.resolve("text", "warning", env) == ("text", "WARNING")
    assert logs.resolve(None, None, {logs.ENV_FORMAT: " ", logs.ENV_LEVEL: ""}) == ("text", "INFO")
    with pytest.raises(logs.SettingError, match=r"^LLAMA_GATEWAY_LOG_FORMAT: .* got 'xml'"):
        logs.resolve(None, None, {logs.ENV_FORMAT: "xml"})
    with pytest.raises(logs.SettingError, match=r"^LLAMA_GATEWAY_LOG_LEVEL: .* got 'loud'"):
        logs.resolve(None, None, {logs.ENV_LEVEL: "loud"})
    with pytest.raises(logs.SettingError, match=r"^--log-level: "):
        logs.resolve(None, "loud", {})


def test_configure_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        a, b = io.StringIO(), io.StringIO()
        logs.configure("json", "INFO", a)
        logs.configure("text", "WARNING", b)
        ours = [h for h in root.handlers if getattr(h, "_llama_log", False)]
        assert len(ours) == 1 and root.level == logging.WARNING
        assert all(h in root.handlers for h in before), "pytest's handlers stay"
        logging.getLogger("llama_gateway.t").warning("hello")
        assert a.getvalue() == "" and "WARNING llama_gateway.t: hello" in b.getvalue()
    finally:
        for h in list(root.handlers):
            if getattr(h, "_llama_log", False):
                root.removeHandler(h)
        root.setLevel(level)


# --------------------------------------------------------------------------- events


def with_fast_health(r: dict[str, Any]) -> dict[str, Any]:
    r["config"]["balancer"]["healthchecks"] = {
        "active": {
            "timeout": 1,
            "healthy": {"interval": 0.05, "successes": 1},
            "unhealthy": {"interval": 0.05, "http_failures": 1},
        }
    }
    return r


async def test_health_changes_are_events_without_secrets(upstream, gateway) -> None:
    up = await upstream("llamacpp", behaviour=Behaviour(loading=True))
    auth = {"header_name": "Authorization", "header_value": f"Bearer {SECRET}"}
    t = target(up, "/completion", fmt="raw", options={"raw_flavor": "llamacpp"}, auth=auth)
    with json_log() as log:
        gw = await gateway(with_fast_health(route(t, name="chat")))
        state = gw.router.routes[0].targets[0].state
        await until(lambda: not state.healthy)
        up.behaviour.loading = False
        await until(lambda: state.healthy)
    changes = log.events("target.health_changed")
    assert [(e["from"], e["to"], e["level"]) for e in changes] == [
        ("healthy", "unhealthy", "WARNING"),
        ("unhealthy", "healthy", "INFO"),
    ]
    for e in changes:
        assert e["route"] == "chat" and e["target"] == state.name
        assert e["upstream"] == f"127.0.0.1:{up.port}"
        assert e["logger"] == "llama_gateway.health"
    assert changes[0]["reason"] == "1 http failures in a row"
    assert changes[0]["last_status"] == 503
    assert changes[1]["reason"] == "1 successes in a row"
    assert SECRET not in log.buf.getvalue()


async def test_circuit_open_half_open_closed(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(status=500))
    balancer = {"max_fails": 2, "fail_timeout": 100, "retries": 0}
    gw = await gateway(route(target(up, "/api/chat"), name="chat", balancer=balancer))

    async def status() -> int:
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            return r.status

    with json_log() as log:
        assert [await status(), await status()] == [500, 500]
        assert [e["event"] for e in log.events("circuit.")] == ["circuit.opened"]
        up.behaviour.status = None
        # Open for fail_timeout (100 ms): 503 until the trial request gets through.
        for _ in range(5000):
            if await status() == 200:
                break
        else:
            raise AssertionError("the circuit never let a trial through")
    got = log.events("circuit.")
    assert [e["event"] for e in got] == ["circuit.opened", "circuit.half_open", "circuit.closed"]
    opened = got[0]
    assert opened["level"] == "WARNING" and opened["failures"] == 2 and opened["open_for"] == 0.1
    for e in got:
        assert e["route"] == "chat" and e["target"] == gw.router.routes[0].targets[0].name
        assert e["logger"] == "llama_gateway.circuit"


async def test_a_failed_trial_opens_it_again(upstream, gateway, http) -> None:
    up = await upstream("ollama", behaviour=Behaviour(status=502))
    balancer = {"max_fails": 1, "fail_timeout": 50, "retries": 0}
    gw = await gateway(route(target(up, "/api/chat"), balancer=balancer))
    with json_log() as log:
        for _ in range(5000):
            async with http.post(url(gw), json={"messages": CHAT}) as r:
                await r.read()
            if len(log.events("circuit.opened")) == 2:
                break
    names = [e["event"] for e in log.events("circuit.")]
    assert names[:3] == ["circuit.opened", "circuit.half_open", "circuit.opened"]
    assert [e["failures"] for e in log.events("circuit.opened")][:2] == [1, 1]
    assert "circuit.closed" not in names


async def test_no_circuit_events_while_the_state_holds(upstream, gateway, http) -> None:
    up = await upstream("ollama")
    balancer = {"max_fails": 2, "fail_timeout": 10000, "retries": 0}
    gw = await gateway(route(target(up, "/api/chat"), balancer=balancer))
    with json_log() as log:
        for _ in range(5):
            async with http.post(url(gw), json={"messages": CHAT}) as r:
                assert r.status == 200
    assert log.events("circuit.") == []


async def test_discovery_failing_and_recovered_events(upstream) -> None:
    with socket.socket() as s:  # a port nothing listens on, for now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = {"header_name": "Authorization", "header_value": f"Bearer {SECRET}"}
    t = target(f"http://127.0.0.1:{port}/api/chat", "", auth=auth)
    cfg = parse({"routes": [route(t)]}, {}).routes[0].targets[0]
    d = Discovery(interval=60)
    d.add(server_spec(cfg), "ollama", TargetState(index=0, name="a", weight=100))
    with json_log() as log:
        await d.poll()
        up = await upstream("ollama")
        await up.stop()
        await up.start(port=port)
        await d.poll()
    await d.stop()
    failing, recovered = log.events("discovery.")
    assert failing["event"] == "discovery.failing" and failing["level"] == "WARNING"
    assert failing["server"] == f"127.0.0.1:{port}" and failing["targets"] == ["a"]
    assert "/api/tags" in failing["error"] and failing["keep_for"] == 180.0
    assert recovered["event"] == "discovery.recovered" and recovered["level"] == "INFO"
    assert recovered["server"] == failing["server"]
    assert SECRET not in log.buf.getvalue()
