"""Reload triggers: the config watcher (a plain file, and the way Kubernetes swaps a
mounted ConfigMap), coalesced reloads, and SIGHUP / --watch-config on a real process."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from helpers import route, target
from test_process import launch

from gateway.reload import ConfigWatcher, Reloader


def configmap(root: Path, version: str, text: str) -> None:
    """Kubernetes' layout: config.yaml -> ..data/config.yaml, ..data -> ..<version>;
    an update writes a new version directory and renames a new ..data over the old."""
    (root / f"..{version}").mkdir()
    (root / f"..{version}" / "config.yaml").write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(f"..{version}")
    os.replace(tmp, root / "..data")
    link = root / "config.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/config.yaml")


def test_watcher_sees_content_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("a: 1\n")
    calls: list[int] = []
    w = ConfigWatcher(str(path), lambda: calls.append(1))
    assert w.check() is False
    os.utime(path, ns=(1, 1))  # touched, same bytes
    assert w.check() is False and calls == []
    path.write_text("a: 2\n")
    os.utime(path, ns=(2, 2))  # a new mtime even on filesystems with coarse clocks
    assert w.check() is True and calls == [1]
    assert w.check() is False
    path.unlink()  # mid-swap by an editor: waited out, not a reload
    assert w.check() is False
    path.write_text("a: 3\n")
    assert w.check() is True and calls == [1, 1]


def test_watcher_follows_a_configmap_swap(tmp_path: Path) -> None:
    configmap(tmp_path, "2026_12_04_1", "a: 1\n")
    calls: list[int] = []
    w = ConfigWatcher(str(tmp_path / "config.yaml"), lambda: calls.append(1))
    # The watched path itself (a symlink) never changes; what it resolves to does.
    before = os.lstat(tmp_path / "config.yaml")
    configmap(tmp_path, "2026_12_04_2", "a: 2\n")
    assert os.lstat(tmp_path / "config.yaml").st_ino == before.st_ino
    assert w.check() is True and calls == [1]
    configmap(tmp_path, "2026_12_04_3", "a: 2\n")  # a resync with the same content
    assert w.check() is False and calls == [1]


async def test_reloads_coalesce() -> None:
    """Triggers during a reload make exactly one more reload after it."""
    gate = asyncio.Event()
    runs = 0

    async def reload() -> bool:
        nonlocal runs
        runs += 1
        await gate.wait()
        return True

    r = Reloader(reload)
    r.trigger()
    await asyncio.sleep(0)
    for _ in range(5):
        r.trigger()
    gate.set()
    await r.wait()
    assert runs == 2 and r.done == 2


# ------------------------------------------------------------------ a real process


async def start(cfg: Path, *args: str) -> tuple[asyncio.subprocess.Process, int, int]:
    p = await launch("serve", "--config", str(cfg), *args)
    return p.proc, p.port, p.status_port


async def stderr_until(proc: asyncio.subprocess.Process, text: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    while text not in seen:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert line, f"gateway exited: {seen.decode()}"
        seen += line
    return seen


def write(path: Path, routes: list[dict[str, Any]]) -> str:
    text = yaml.safe_dump({"server": {"port": 0, "status_port": 0}, "routes": routes})
    path.write_text(text)
    return text


async def status(http: aiohttp.ClientSession, port: int, path: str) -> int:
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    async with http.post(f"http://127.0.0.1:{port}{path}", json=body) as r:
        await r.read()
        return r.status


async def test_sighup_reloads_and_keeps_a_bad_file_out(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama")
    cfg = tmp_path / "gw.yaml"
    write(cfg, [route(target(up, "/api/chat"), path="/one", name="one")])
    proc, port, _ = await start(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            assert await status(http, port, "/one") == 200
            write(cfg, [route(target(up, "/api/chat"), path="/two", name="two")])
            proc.send_signal(signal.SIGHUP)
            await stderr_until(proc, b"config reloaded")
            assert await status(http, port, "/two") == 200
            assert await status(http, port, "/one") == 404
            # A bad file: every error with its key path, the running config stays.
            bad = [route(target(up, "/api/chat", weight=0), path="/three", name="three")]
            write(cfg, bad)
            proc.send_signal(signal.SIGHUP)
            seen = await stderr_until(proc, b"config reload")
            assert b"routes[0].config.targets[0].weight" in seen
            assert b"Traceback" not in seen
            assert await status(http, port, "/two") == 200
            assert await status(http, port, "/three") == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_watch_config_follows_a_configmap_update(upstream, tmp_path: Path) -> None:
    up = await upstream("ollama")
    one = [route(target(up, "/api/chat"), path="/one", name="one")]
    two = [route(target(up, "/api/chat"), path="/two", name="two")]
    text_one = yaml.safe_dump({"server": {"port": 0, "status_port": 0}, "routes": one})
    text_two = yaml.safe_dump({"server": {"port": 0, "status_port": 0}, "routes": two})
    configmap(tmp_path, "v1", text_one)
    env_watch = {**os.environ, "LLAMA_GATEWAY_WATCH_CONFIG": "1"}
    p = await launch("serve", "--config", str(tmp_path / "config.yaml"), env=env_watch)
    proc, port = p.proc, p.port
    try:
        async with aiohttp.ClientSession() as http:
            assert await status(http, port, "/one") == 200
            configmap(tmp_path, "v2", text_two)
            await stderr_until(proc, b"config reloaded")
            assert await status(http, port, "/two") == 200
            assert await status(http, port, "/one") == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
