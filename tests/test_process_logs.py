"""`llama-gateway serve --log-format json` as a real process: every stderr line is one
JSON object; startup, drain and stop are events with their documented fields; the
access log line on stdout carries the request id; flags beat the environment, which
beats the file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from helpers import route, target

from gateway import __version__
from gateway.sim import Behaviour

STREAM = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, started: dict[str, Any]) -> None:
        self.proc = proc
        self.started = started
        self.base = started["listen"]
        self.lines: list[bytes] = []

    async def finish(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """Exit code, stderr lines and stdout lines (all parsed: a line that is not JSON
        fails the test)."""
        assert self.proc.stderr is not None and self.proc.stdout is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout=30)
        rest = await self.proc.stderr.read()
        err = [json.loads(x) for x in [*self.lines, *rest.splitlines()] if x.strip()]
        out = [json.loads(x) for x in (await self.proc.stdout.read()).splitlines() if x.strip()]
        return code, err, out


async def serve(
    tmp_path: Path, routes: list[dict[str, Any]], env: dict[str, str], *args: str
) -> Served:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"server": {"port": 0, "status_port": 0, "drain_timeout": 30}, "routes": routes}
        )
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--log-format", "json", "serve", "--config", str(cfg), *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert line, f"gateway exited early: {b''.join(lines).decode()}"
        lines.append(line)
        doc = json.loads(line)
        if doc["event"] == "gateway.started":
            served = Served(proc, doc)
            served.lines = lines
            return served


def by_event(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["event"]: d for d in lines if d["event"]}


async def test_startup_drain_and_stop_events(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.02, n_tokens=20))
    t = target(up, "/api/chat", logging={"log_statistics": True})
    # The environment's drain_timeout beats the file's (30).
    p = await serve(tmp_path, [route(t)], {"LLAMA_GATEWAY_DRAIN_TIMEOUT": "20"})
    async with aiohttp.ClientSession() as http:
        resp = await http.post(p.base + "/chat", json=STREAM, headers={"X-Request-Id": "trace-1"})
        assert resp.headers["X-Request-Id"] == "trace-1"
        await resp.content.readuntil(b"\n\n")  # the stream is under way
        p.proc.send_signal(signal.SIGTERM)
        rest = await resp.content.read()
        resp.close()
    assert rest.rstrip().endswith(b"data: [DONE]")
    code, err, out = await p.finish()
    assert code == 0
    for d in err:
        assert list(d)[:5] == ["ts", "level", "logger", "event", "msg"]
    events = [d["event"] for d in err if d["event"]]
    assert events.index("gateway.started") < events.index("drain.started")
    assert events.index("drain.started") < events.index("drain.finished")
    assert events[-1] == "gateway.stopped"
    e = by_event(err)
    started = e["gateway.started"]
    assert started["listen"].startswith("http://127.0.0.1:")
    assert started["status_listen"].startswith("http://127.0.0.1:")
    assert started["routes"] == 1 and started["targets"] == 1
    assert started["version"] == __version__ and started["level"] == "INFO"
    assert e["drain.started"]["in_flight"] == 1 and e["drain.started"]["timeout"] == 20
    finished = e["drain.finished"]
    assert (finished["in_flight"], finished["completed"], finished["cut"]) == (1, 1, 0)
    assert finished["forced"] is False and finished["level"] == "INFO"
    (access,) = out
    assert access["request_id"] == "trace-1" and access["status"] == 200


async def test_drain_that_runs_out_counts_what_it_cut(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=2000))
    p = await serve(
        tmp_path, [route(target(up, "/api/chat"))], {"LLAMA_GATEWAY_DRAIN_TIMEOUT": "0.2"}
    )
    async with aiohttp.ClientSession() as http:
        resp = await http.post(p.base + "/chat", json=STREAM)
        await resp.content.readuntil(b"\n\n")
        p.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(resp.content.read(), timeout=30)
        resp.close()
    code, err, _ = await p.finish()
    assert code == 0
    finished = by_event(err)["drain.finished"]
    assert (finished["in_flight"], finished["completed"], finished["cut"]) == (1, 0, 1)
    assert finished["level"] == "WARNING"


async def test_flags_beat_the_environment(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama")
    env = {"LLAMA_GATEWAY_PORT": "1", "LLAMA_GATEWAY_STATUS_HOST": "127.0.0.2"}
    p = await serve(
        tmp_path, [route(target(up, "/api/chat"))], env, "--port", "0", "--status-host", "127.0.0.1"
    )
    assert not p.base.endswith(":1")
    assert p.started["status_listen"].startswith("http://127.0.0.1:")
    p.proc.send_signal(signal.SIGTERM)
    code, _, _ = await p.finish()
    assert code == 0
