"""`serve --workers N` as real processes: a supervisor, its workers, one port.

What is asserted is correctness, not timing: every request answered, the pod's merged
counters equal to what was sent, each worker restarted when it dies, every stream
drained. Loops that wait for something are bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helpers import LONG_WINDOW, route, target
from prometheus_client.parser import text_string_to_metric_families
from test_process import LISTENING

from gateway.sim import Behaviour
from gateway.workers.count import available_cpus

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


class Pod:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, status_port: int) -> None:
        self.proc, self.port, self.status_port = proc, port, status_port
        self.base = f"http://127.0.0.1:{port}"
        self.status = f"http://127.0.0.1:{status_port}"
        self.reader: asyncio.Future[None] | None = None


async def start_pod(
    tmp_path: Path,
    routes: list[dict[str, Any]],
    *args: str,
    server: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Pod:
    cfg = tmp_path / "gw.yaml"
    raw = {"server": {"port": 0, "status_port": 0, "drain_timeout": 30, **(server or {})}}
    cfg.write_text(yaml.safe_dump({**raw, "routes": routes}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(cfg), *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
        seen += line
        assert line, f"gateway exited early: {seen.decode()}"
        m = LISTENING.search(line)
        if m:
            pod = Pod(proc, int(m.group(1)), int(m.group(2)))
            pod.reader = asyncio.ensure_future(_drain_stderr(proc))  # a full pipe blocks
            return pod


async def _drain_stderr(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


@pytest.fixture
async def pods() -> Any:
    started: list[Pod] = []

    async def make(*a: Any, **kw: Any) -> Pod:
        pod = await start_pod(*a, **kw)
        started.append(pod)
        return pod

    yield make
    for pod in started:
        if pod.proc.returncode is None:
            pod.proc.send_signal(signal.SIGTERM)
            pod.proc.send_signal(signal.SIGTERM)  # the second one: no drain wait
            await asyncio.wait_for(pod.proc.wait(), 60)


async def send(pod: Pod, n: int) -> list[int]:
    """`n` non-stream requests, each on a new connection (so SO_REUSEPORT hashes each
    one anew: a new client port)."""
    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def one() -> int:
            async with http.post(pod.base + "/chat", json=CHAT) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.json(content_type=None)


async def metrics(pod: Pod) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The merged exposition as {(sample, labels): value}; fails on a duplicate series."""
    async with aiohttp.ClientSession() as http, http.get(pod.status + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    names = Counter(f.name for f in text_string_to_metric_families(text))
    assert [n for n, c in names.items() if c > 1] == [], "one family per name"
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def total(series: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        v for (n, lv), v in series.items() if n == name and labels.items() <= dict(lv).items()
    )


async def restarted(pod: Pod, index: int, old_pid: int) -> list[dict[str, Any]]:
    """The pod's workers once worker `index` runs again, ready, as a new process."""
    for _ in range(300):
        workers: list[dict[str, Any]] = (await get_json(pod.status + "/status"))["workers"]
        if workers[index]["state"] == "ready" and workers[index]["pid"] != old_pid:
            return workers
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {index} not restarted: {workers}")


def worker_requests(status: dict[str, Any]) -> list[int]:
    return [
        sum(t["requests"] for r in w["status"]["routes"] for t in r["targets"])
        for w in status["workers"]
    ]


@pytest.mark.parametrize("mode", ["reuseport", "shared"])
async def test_two_workers_serve_one_port_and_metrics_add_up(
    upstream, pods, tmp_path: Path, mode: str
) -> None:
    up = await upstream("ollama")
    pod = await pods(
        tmp_path, [route(target(up, "/api/chat"))], "--workers", "2",
        env={"LLAMA_GATEWAY_WORKER_SOCKET": mode},
    )  # fmt: skip
    assert await send(pod, 40) == [200] * 40
    status = await get_json(pod.status + "/status")
    assert status["ready"] is True and status["pod"]["socket"] == mode
    assert [w["state"] for w in status["workers"]] == ["ready", "ready"]
    assert len({w["pid"] for w in status["workers"]}) == 2
    doc = await get_json(pod.status + "/openapi.json")  # a worker's, for the pod
    assert doc["openapi"].startswith("3.") and "/chat" in doc["paths"]
    per_worker = worker_requests(status)
    assert sum(per_worker) == 40
    if mode == "reuseport":  # 40 connections hashed over 2 sockets: all on one is 2^-39
        assert min(per_worker) > 0, per_worker
    merged = status["routes"][0]["targets"][0]
    assert merged["requests"] == 40 and merged["in_flight"] == 0
    assert merged["health"]["active"] == "healthy"

    m = await metrics(pod)
    assert total(m, "llama_gateway_requests_total", outcome="success") == 40
    assert total(m, "kong_ai_llm_requests_total") == 40
    assert total(m, "llama_gateway_request_duration_seconds_count") == 40
    assert total(m, "llama_gateway_request_duration_seconds_bucket", le="+Inf") == 40
    assert total(m, "llama_gateway_workers", state="ready") == 2
    cpu = {dict(lv).get("worker") for (n, lv) in m if n == "process_cpu_seconds_total"}
    assert cpu == {None, "0", "1"}, "the supervisor's own and one per worker"
    async with aiohttp.ClientSession() as http, http.get(pod.status + "/readyz") as r:
        assert r.status == 200


async def test_killed_worker_is_restarted_and_counts_are_kept(upstream, pods, tmp_path) -> None:
    up = await upstream("ollama")
    pod = await pods(tmp_path, [route(target(up, "/api/chat"))], server={"workers": 2})
    assert await send(pod, 20) == [200] * 20
    before = await metrics(pod)  # what Prometheus has seen: it must never go back
    assert total(before, "llama_gateway_requests_total") == 20
    victim = (await get_json(pod.status + "/status"))["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    for _ in range(200):  # until the supervisor has reaped it: every thread gone, so
        # its listening socket is closed (a zombie leader may still have live threads)
        workers = (await get_json(pod.status + "/status"))["workers"]
        if workers[1]["pid"] != victim["pid"]:
            break
        await asyncio.sleep(0.02)
    assert await send(pod, 20) == [200] * 20, "the other worker serves meanwhile"
    async with aiohttp.ClientSession() as http, http.get(pod.status + "/readyz") as r:
        assert r.status == 200
    workers = await restarted(pod, 1, victim["pid"])
    assert workers[1]["restarts"] == 1 and workers[0]["restarts"] == 0
    assert await send(pod, 20) == [200] * 20
    after = await metrics(pod)
    assert total(after, "llama_gateway_requests_total") == 60
    assert total(after, "llama_gateway_worker_restarts_total", reason="signal") == 1
    for key, value in before.items():  # no pod counter went backwards
        if key[0].startswith(("llama_gateway_", "kong_ai_")) and key[0].endswith(
            ("_total", "_count", "_bucket", "_sum")
        ):
            assert after.get(key, 0) >= value, key


async def test_local_rate_limits_count_for_the_whole_pod(upstream, pods, tmp_path) -> None:
    """`strategy: local` is per pod, as Kong's is per node: the workers share the
    supervisor's counters, so two workers do not let twice the limit through. They
    outlive a worker too."""
    up = await upstream("ollama")
    r = route(target(up, "/api/chat"))
    r["rate_limiting"] = {"limits": [{"requests": 5, "window": LONG_WINDOW}]}
    pod = await pods(tmp_path, [r], server={"workers": 2})
    statuses = await send(pod, 40)
    assert Counter(statuses) == {200: 5, 429: 35}
    m = await metrics(pod)
    assert total(m, "llama_gateway_rate_limited_total", limit="requests") == 35
    # 40 connections over 2 sockets reach both workers (all on one is 2^-39): with
    # counters of their own they let 10 through (checked by hand: Counter({429: 30,
    # 200: 10})).
    workers = (await get_json(pod.status + "/status"))["workers"]
    stores = [w["status"]["routes"][0]["access"]["rate_limiting"]["store"] for w in workers]
    assert stores == ["ok", "ok"]
    victim = workers[1]
    os.kill(victim["pid"], signal.SIGKILL)
    await restarted(pod, 1, victim["pid"])
    assert await send(pod, 10) == [429] * 10, "the count outlived the worker"
    assert len(up.generation_requests()) == 5


async def test_sigterm_drains_streams_in_every_worker_then_exits_0(
    upstream, pods, tmp_path
) -> None:
    up = await upstream("ollama", behaviour=Behaviour(token_interval=0.05, n_tokens=30))
    pod = await pods(tmp_path, [route(target(up, "/api/chat"))], "--workers", "2")
    body = {**CHAT, "stream": True}
    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn) as http:
        streams = [await http.post(pod.base + "/chat", json=body) for _ in range(6)]
        firsts = [await s.content.readuntil(b"\n\n") for s in streams]
        pod.proc.send_signal(signal.SIGTERM)
        for _ in range(100):
            async with http.get(pod.status + "/readyz") as r:
                if r.status == 503:
                    assert (await r.json())["status"] == "draining"
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("/readyz never went 503 during the drain")
        rests = [await asyncio.wait_for(s.content.read(), 30) for s in streams]
    for first, rest in zip(firsts, rests, strict=True):
        assert (first + rest).decode().rstrip().endswith("data: [DONE]")
    assert await asyncio.wait_for(pod.proc.wait(), 60) == 0
    with pytest.raises(aiohttp.ClientConnectionError):  # nobody listens any more
        await send(pod, 1)


async def test_workers_auto_is_one_per_usable_cpu(upstream, pods, tmp_path) -> None:
    up = await upstream("ollama")
    pod = await pods(tmp_path, [route(target(up, "/api/chat"))], "--workers", "auto")
    status = await get_json(pod.status + "/status")
    n = available_cpus()
    if n == 1:  # one process, no supervisor: the single-process document
        assert "pod" not in status
    else:
        assert status["pod"]["workers"] == n and len(status["workers"]) == n
    assert await send(pod, 4) == [200] * 4


async def test_single_worker_is_the_plain_single_process(upstream, pods, tmp_path) -> None:
    up = await upstream("ollama")
    pod = await pods(tmp_path, [route(target(up, "/api/chat"))], "--workers", "1")
    status = await get_json(pod.status + "/status")
    assert "pod" not in status and "workers" not in status
    assert await send(pod, 2) == [200, 200]


@pytest.mark.parametrize(
    ("args", "yaml_server", "message"),
    [
        (["--workers", "0"], {}, "--workers: must be an integer from 1 to 256, or auto"),
        (["--workers", "lots"], {}, "--workers: must be an integer from 1 to 256, or auto"),
        ([], {"workers": 0}, "server.workers: must be an integer from 1 to 256, or auto"),
        ([], {"workers": "x"}, "server.workers: must be an integer from 1 to 256, or auto"),
    ],
)
async def test_bad_worker_counts_are_refused(
    tmp_path: Path, args: list[str], yaml_server: dict[str, Any], message: str
) -> None:
    cfg = tmp_path / "gw.yaml"
    routes = [route(target("http://127.0.0.1:9/api/chat", "/api/chat"))]
    cfg.write_text(yaml.safe_dump({"server": yaml_server, "routes": routes}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(cfg), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (1, 2) and message in err.decode(), err.decode()


async def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    upstream, pods, tmp_path: Path
) -> None:
    up = await upstream("ollama")
    pod = await pods(tmp_path, [route(target(up, "/api/chat"))], "--workers", "2")
    pids = [w["pid"] for w in (await get_json(pod.status + "/status"))["workers"]]
    pod.proc.kill()
    await pod.proc.wait()

    def gone(pid: int) -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True

    for _ in range(300):
        if all(gone(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("orphaned workers kept running")
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(pod, 1)
