"""The supervisor in this process (so its timings can be shortened): a hung worker is
killed and replaced, a pod that cannot start says so."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from helpers import route, target

from gateway.config import load_file
from gateway.workers.supervisor import Supervisor, Timing


def write_config(tmp_path: Path, *routes: dict[str, Any]) -> Path:
    cfg = tmp_path / "gw.yaml"
    server = {"port": 0, "status_port": 0, "drain_timeout": 5}
    cfg.write_text(yaml.safe_dump({"server": server, "routes": list(routes)}))
    return cfg


def supervisor(cfg: Path, count: int = 2, **kw: Any) -> Supervisor:
    return Supervisor(
        load_file(str(cfg)),
        ["serve", "--config", str(cfg)],
        count,
        host="127.0.0.1",
        port=kw.pop("port", 0),
        status_host="127.0.0.1",
        status_port=0,
        **kw,
    )


async def until(check: Any, what: str, tries: int = 300) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_a_hung_worker_is_killed_and_replaced(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama")
    cfg = write_config(tmp_path, route(target(up, "/api/chat")))
    fast = Timing(watch_interval=0.1, watch_timeout=0.3, watch_failures=3)
    sup = supervisor(cfg, timing=fast)
    run = asyncio.ensure_future(sup.run())
    try:
        await until(lambda: sup.started_up or run.done(), "the pod started")
        assert sup.started_up
        hung = sup.slots[0].pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, listening, answering nothing
        await until(
            lambda: sup.slots[0].pid != hung and sup.slots[0].state == "ready",
            "worker 0 replaced",
        )
        assert sup.restarts == {"exited": 0, "signal": 0, "unresponsive": 1}
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{sup.bound_port}/chat"
            async with http.post(url, json={"messages": [{"role": "user", "content": "x"}]}) as r:
                assert r.status == 200
    finally:
        sup._on_stop("SIGTERM")
        assert await asyncio.wait_for(run, 60) == 0


async def test_a_worker_that_cannot_start_stops_the_pod(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, route(target("http://127.0.0.1:9/api/chat", "/api/chat")))
    sup = supervisor(cfg, python=str(tmp_path / "no-such-python"))
    assert await asyncio.wait_for(sup.run(), 60) == 1


async def test_a_taken_port_is_a_clean_failure(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, route(target("http://127.0.0.1:9/api/chat", "/api/chat")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sup = supervisor(cfg, port=taken.getsockname()[1])
        assert await asyncio.wait_for(sup.run(), 60) == 1
