"""Config reloads in a pod: SIGHUP to the supervisor reaches every worker, and with
--watch-config the supervisor alone watches the file (one reload per worker per change).
Needs the reload wiring of `serve` (cli.py, server.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import yaml
from helpers import route, target
from test_workers import get_json, metrics, pods, send, total  # noqa: F401 (pods: fixture)


async def test_sighup_and_the_watched_file_reload_every_worker_once(
    upstream,
    pods,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    up = await upstream("ollama")
    first = route(target(up, "/api/chat"))
    pod = await pods(tmp_path, [first], "--workers", "2", "--watch-config")
    cfg = tmp_path / "gw.yaml"
    doc = yaml.safe_load(cfg.read_text())

    async def other_everywhere(path: str) -> bool:
        """A new route answers on 20 new connections (both workers, almost surely)."""
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as http:
            for _ in range(20):
                async with http.post(pod.base + path, json={"messages": []}) as r:
                    if r.status == 404:
                        return False
        return True

    # The watched file changes: the supervisor, and only it, notices and sends SIGHUP.
    doc["routes"].append(route(target(up, "/api/chat"), path="/two", name="two"))
    cfg.write_text(yaml.safe_dump(doc))
    for _ in range(100):
        if await other_everywhere("/two"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the watched change never reached every worker")
    await asyncio.sleep(2.5)  # a worker watching too would have reloaded again by now
    m = await metrics(pod)
    assert total(m, "llama_gateway_config_reloads_total", result="success") == 2

    # SIGHUP to the supervisor: forwarded to each worker.
    doc["routes"].append(route(target(up, "/api/chat"), path="/three", name="three"))
    cfg.write_text(yaml.safe_dump(doc))
    pod.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if await other_everywhere("/three"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("SIGHUP never reached every worker")
    status = await get_json(pod.status + "/status")
    assert [r["name"] for r in status["routes"]] == ["r", "two", "three"]
    assert await send(pod, 4) == [200] * 4
