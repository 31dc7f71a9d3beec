"""The CLI as a real process: serve, graceful drain on SIGTERM/SIGINT, the demo."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helpers import route, target

from gateway.sim import Behaviour

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(
    rb"listening on http://127\.0\.0\.1:(\d+) \(status http://127\.0\.0\.1:(\d+)\)"
)


class Proc:
    def __init__(
        self, proc: asyncio.subprocess.Process, port: int, status_port: int, startup: bytes = b""
    ) -> None:
        self.proc, self.port, self.status_port = proc, port, status_port
        self.startup = startup  # its stderr up to the line saying where it listens

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"


async def launch(
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int = asyncio.subprocess.DEVNULL,
    preexec: Any = None,
) -> Proc:
    """`python -m gateway <args>` as a process, once it says where it listens (its
    stderr stays open for the caller to read on)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        env=env if env is not None else dict(os.environ),
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        seen += line
        assert line, f"gateway exited early: {seen.decode()}"
        m = LISTENING.search(line)
        if m:
            return Proc(proc, int(m.group(1)), int(m.group(2)), seen)


async def start_serve(
    tmp_path: Path,
    routes: list[dict[str, Any]],
    *,
    ignore_sigint: bool = False,
    drain: float = 30,
    extra: dict[str, Any] | None = None,
    name: str = "gw.yaml",
) -> Proc:
    """`llama-gateway serve` on a config of `routes` (and `extra` top-level keys)."""
    cfg = tmp_path / name
    server = {"port": 0, "status_port": 0, "drain_timeout": drain}
    cfg.write_text(yaml.safe_dump({"server": server, "routes": routes, **(extra or {})}))

    def preexec() -> None:
        if ignore_sigint:  # what a shell does to `cmd &` children
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    env = {**os.environ, "LLAMA_GATEWAY_CONFIG": str(cfg)}
    return await launch("serve", env=env, preexec=preexec)


async def wait_exit(p: Proc, timeout: float = 30) -> int:
    return await asyncio.wait_for(p.proc.wait(), timeout=timeout)


def stream_body() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_in_flight_stream_then_exits_0(
    upstream, tmp_path: Path, sig: signal.Signals
) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=30))
    p = await start_serve(
        tmp_path, [route(target(up, "/api/chat"))], ignore_sigint=sig == signal.SIGINT
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(p.status + "/readyz") as r:
            assert r.status == 200
        resp = await http.post(p.base + "/chat", json=stream_body())
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        p.proc.send_signal(sig)
        for _ in range(100):  # readiness flips to 503 while the stream drains
            async with http.get(p.status + "/readyz") as r:
                if r.status == 503:
                    assert (await r.json())["status"] == "draining"
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("/readyz never went 503 during drain")
        with pytest.raises(aiohttp.ClientConnectionError):  # no new connections
            async with aiohttp.ClientSession() as fresh:
                await fresh.post(p.base + "/chat", json=stream_body())
        rest = await resp.content.read()
        resp.close()
    events = (first + rest).decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]", "the in-flight stream finished normally"
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
        if json.loads(e[6:])["choices"]
    )
    assert text == up.expected_text(30)
    assert await wait_exit(p) == 0


async def test_drain_timeout_ends_streams_with_error_event(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=2000))
    p = await start_serve(tmp_path, [route(target(up, "/api/chat"))], drain=0.3)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(p.base + "/chat", json=stream_body())
        await resp.content.readuntil(b"\n\n")
        p.proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(resp.content.read(), timeout=30)).decode()
        resp.close()
    last = rest.strip().split("\n\n")[-1]
    assert json.loads(last.removeprefix("data: ")) == {
        "error": {"message": "gateway is shutting down"}
    }
    assert await wait_exit(p) == 0
    await asyncio.wait_for(up.stream_cancelled.wait(), timeout=10)


async def test_serve_rejects_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "routes: must be a non-empty list" in proc.stderr


async def test_cli_overrides_ports(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama")
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"server": {"port": 1, "status_port": 2}, "routes": [route(target(up, "/api/chat"))]}
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", "0", "--status-port", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = b""
    while not LISTENING.search(line):
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert line
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_seed_config_against_ollama_fake_on_its_port(upstream, tmp_path: Path) -> None:
    """config.example.yaml as shipped, with an Ollama fake on 127.0.0.1:11434."""
    up = await upstream("ollama")
    await up.stop()
    try:
        await up.start(port=11434)
    except OSError:
        pytest.skip("port 11434 is taken on this machine (a real Ollama?)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(ROOT / "config.example.yaml"),
        "--port", "0", "--status-port", "0", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    m = None
    while m is None:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert line
        m = LISTENING.search(line)
    # The seed's curl: POST /llama2-chat with a system and a user message.
    body = {
        "messages": [
            {"role": "system", "content": "You are a mathematician."},
            {"role": "user", "content": "What is 1+1?"},
        ]
    }
    seed_url = f"http://127.0.0.1:{int(m.group(1))}/llama2-chat"
    async with aiohttp.ClientSession() as http, http.post(seed_url, json=body) as r:
        assert r.status == 200
        data = await r.json()
    assert data["choices"][0]["message"]["content"] == up.expected_text(8)
    assert up.generation_requests()[0].path == "/api/chat"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_demo_prints_working_curl_lines() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--port", "0", "--status-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None

    async def run(argv: list[str]) -> bytes:
        child = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(child.communicate(), timeout=30)
        assert child.returncode == 0, argv
        return out

    curls: list[str] = []
    example = ""
    try:
        while not example:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
            assert line, "demo exited early"
            if line.startswith("curl "):
                assert "|" not in line
                curls.append(line.strip())
            elif line.startswith("python3 -c "):
                example = line.strip()
        data = json.loads(await run(shlex.split(curls[0])))
        assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"]
        out = await run(shlex.split(curls[1]))
        assert out.decode().rstrip().endswith("data: [DONE]")
        models = [c for c in curls if c.endswith("/v1/models")]
        assert len(models) == 1
        listed = json.loads(await run(shlex.split(models[0])))
        assert {m["id"] for m in listed["data"]} == {"llama2", "nomic-embed-text"}
        # Every printed curl works (exit 0, an answer without an error object).
        for c in curls[2:]:
            out = await run(shlex.split(c))
            assert out and b'"error"' not in out, (c, out)
        # The ollama client example, with this interpreter (the test extra has ollama).
        argv = shlex.split(example)
        text = (await run([sys.executable, *argv[1:]])).decode().strip()
        assert text.startswith("Llamas are")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
