"""llama-gateway benchmark: direct vs floor vs gateway, side by side in one run.

    python bench/run.py                 # full run (~4 min), installs wrk + nginx if missing
    python bench/run.py --quick         # a few seconds per scenario, tiny concurrency
    python bench/run.py --only stream,slow --profile

See bench/README.md for the method. Results: bench/results/<UTC timestamp>/ (report.md,
results.json, logs, profiles); the report is also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import client
import payloads
import profiles
import report

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HZ = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("nonstream", "balancer", "stream", "slow", "raw", "openai")
CHAT_PATH = "/v1/chat/completions"  # the gateway route's path


class BenchError(Exception):
    pass


# ------------------------------------------------------------------ settings


@dataclass
class Settings:
    quick: bool
    warmup: float  # seconds of c32 load before measuring (Python generator)
    duration: int  # seconds at c32 (whole seconds: wrk's -d)
    c1_duration: int
    concurrency: int
    stream_chunks: int
    stream_interval_ms: int
    c1_streams: int  # sequential streams for TTFT / total time
    workers: int  # concurrent streams for CPU per chunk
    per_worker: int
    slow_streams: int
    slow_chunks: int
    slow_interval_ms: int
    profile_seconds: int

    @classmethod
    def make(cls, quick: bool, duration: int | None) -> Settings:
        if quick:
            return cls(True, 0.0, 1, 1, 4, 8, 10, 3, 4, 2, 20, 3, 100, 2)
        return cls(False, 2.0, duration or 5, 3, 32, 64, 10, 12, 64, 4, 1000, 20, 500, 8)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    startup: float = float("nan")
    rss_peak_mib: float = float("nan")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def status_kib(self, key: str) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return float(line.split()[1])
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.rss_peak_mib = self.status_kib("VmHWM") / 1024
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Env:
    args: argparse.Namespace
    s: Settings
    out: Path
    load_cpu: int | None
    proxy_cpu: int | None
    loadgen: str  # wrk | python
    nonstream_upstream: str  # nginx | python
    notes: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    nginx_port: int = 0
    py_port: int = 0
    loop: str = "asyncio"  # event loop of the proxies under test: asyncio | uvloop

    def pin(self, cpu: int | None) -> list[str]:
        return ["taskset", "-c", str(cpu)] if cpu is not None else []

    @property
    def ns_port(self) -> int:
        return self.nginx_port if self.nonstream_upstream == "nginx" else self.py_port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ tools


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return None


def ensure_tools(args: argparse.Namespace, notes: list[str]) -> None:
    """apt-get install wrk and nginx when missing (full runs only, as root or via sudo)."""
    want = [pkg for pkg in ("wrk", "nginx") if _which(pkg) is None]
    if args.uvloop in ("on", "both") and not _has_uvloop() and not args.no_install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uvloop"], check=False)
    if args.profile and _py_spy() is None and not args.no_install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if not want or args.quick or args.no_install:
        return
    if _which("apt-get") is None:
        notes.append(f"{', '.join(want)} missing and no apt-get: Python fallbacks used")
        return
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if _which("sudo") else None)
    if sudo is None:
        notes.append(f"{', '.join(want)} missing and not root: Python fallbacks used")
        return
    print(f"== installing {' '.join(want)} (apt-get)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *want], env=env, check=False)


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def loop_in_use(pid: int) -> str:
    """Which event loop a running process really uses: uvloop's extension mapped or not."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "?"
    return "uvloop" if "/uvloop/" in maps else "asyncio"


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else _which("py-spy")


# ------------------------------------------------------------------ /proc sampling


def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_stat() -> dict[int, tuple[int, int, int]]:
    """Per CPU: (busy, total, softirq) ticks since boot."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq + steal
            out[int(name[3:])] = (busy, busy + idle + iowait, softirq)
    return out


class Window:
    """CPU of the proxy process and of both cores over one measured interval."""

    def __init__(self, env: Env, pid: int | None) -> None:
        self.env = env
        self.pid = pid
        self.t0 = time.monotonic()
        self.s0 = cpu_stat()
        self.p0 = proc_ticks(pid) if pid else 0

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.t0
        s1 = cpu_stat()
        own = (proc_ticks(self.pid) - self.p0) if self.pid else 0
        out: dict[str, float | None] = {
            "wall_s": wall,
            "cpu_s": own / HZ if self.pid else None,
            "proxy_cpu_pct": 100 * own / HZ / wall if self.pid and wall else None,
        }

        def delta(cpu: int | None) -> tuple[int, int, int]:
            if cpu is None or cpu not in s1:
                return 0, 0, 0
            a, b = self.s0[cpu], s1[cpu]
            return b[0] - a[0], b[1] - a[1], b[2] - a[2]

        lb, lt, _ = delta(self.env.load_cpu)
        pb, pt, psi = delta(self.env.proxy_cpu)
        out["load_core_busy_pct"] = 100 * lb / lt if lt else None
        out["proxy_core_busy_pct"] = 100 * pb / pt if pt else None
        out["proxy_core_foreign_pct"] = 100 * max(0, pb - own) / pt if pt else None
        out["proxy_core_softirq_pct"] = 100 * psi / pt if pt else None
        return out


# ------------------------------------------------------------------ processes


def spawn(
    env: Env, name: str, cmd: list[str], cpu: int | None, extra_env: dict[str, str] | None = None
) -> Proc:
    log = env.out / f"{name}.log"
    fh = log.open("wb")
    popen = subprocess.Popen(
        env.pin(cpu) + cmd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(extra_env or {})},
    )
    fh.close()
    proc = Proc(name, popen, log)
    env.procs.append(proc)
    return proc


def stop(env: Env, proc: Proc) -> None:
    proc.stop()
    if proc in env.procs:
        env.procs.remove(proc)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


async def wait_ok(
    proc: Proc, port: int, method: str, path: str, body: bytes, limit: float = 20.0
) -> float:
    """Seconds from spawn until `method path` answers 200 (polled every 5 ms)."""
    t0 = time.monotonic()
    refused_since = None
    while True:
        if proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{_tail(proc.log)}")
        with contextlib.suppress(OSError, TimeoutError):
            status, answer = await client.fetch(port, method, path, body, timeout=2.0)
            if status == 200:
                return time.monotonic() - t0
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > 2.0:  # up, but answering an error
                raise BenchError(f"{proc.name}: {path} answers {status}: {answer[:300]!r}")
        if time.monotonic() - t0 > limit:
            raise BenchError(f"{proc.name}: no 200 on {path} within {limit}s:\n{_tail(proc.log)}")
        await asyncio.sleep(0.005)


def nginx_conf(directory: Path, port: int) -> str:
    def ret(ctype: str, body: bytes) -> str:
        text = body.decode()
        assert "'" not in text and "$" not in text and "\\" not in text
        return f"default_type \"{ctype}\"; return 200 '{text or 'ok'}';"

    locations = "\n".join(
        f"    location = {path} {{ {ret(ctype, body)} }}"
        for path, (ctype, body) in {**payloads.PROBES, **payloads.NONSTREAM}.items()
    )
    d = directory
    return f"""worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{locations}
  }}
}}
"""


async def start_upstreams(env: Env) -> None:
    env.py_port = free_port()
    py = spawn(
        env,
        "upstream",
        [sys.executable, str(BENCH / "stream_server.py"), "--port", str(env.py_port)],
        env.load_cpu,
    )
    await wait_ok(py, env.py_port, "GET", "/_stats", b"")
    if env.nonstream_upstream == "nginx":
        env.nginx_port = free_port()
        d = env.out / "nginx"
        d.mkdir(exist_ok=True)
        (d / "nginx.conf").write_text(nginx_conf(d, env.nginx_port))
        nginx = _which("nginx")
        assert nginx is not None
        cmd = [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]
        ng = spawn(env, "nginx", cmd, env.load_cpu)
        await wait_ok(ng, env.nginx_port, "POST", "/api/chat", payloads.NONSTREAM_BODY)


def gateway_config(
    env: Env, name: str, fmt: str, upstream: str, algorithm: str = "round-robin"
) -> tuple[Path, int]:
    """One route, three targets on the same upstream, the given format and algorithm;
    metrics on (always), health checks on their defaults. Written as JSON (valid YAML)."""
    options: dict[str, Any] = {"llama2_format": fmt, "upstream_url": upstream}
    if fmt == "raw":
        options["raw_flavor"] = "hf"
    port = free_port()
    cfg = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "status_host": "127.0.0.1",
            "status_port": free_port(),
            "drain_timeout": 1,
        },
        "routes": [
            {
                "name": "bench",
                "paths": [CHAT_PATH],
                "plugin": "ai-proxy-advanced",
                "config": {
                    "balancer": {"algorithm": algorithm},
                    "targets": [
                        {
                            "name": f"t{i}",
                            "route_type": "llm/v1/chat",
                            "model": {"provider": "llama2", "name": "llama2", "options": options},
                        }
                        for i in (1, 2, 3)
                    ],
                },
            }
        ],
    }
    path = env.out / f"{name}.yaml"
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path, port


def gateway_command(
    env: Env, config: Path, wrap: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """How the gateway is started (command, extra environment). The event loop is chosen
    with LLAMA_GATEWAY_UVLOOP (the gateway runs on uvloop when installed unless it is 0);
    `start_gateway` checks in /proc which loop the process really runs. `wrap`: a
    script run in front of `-m gateway` (the profiler)."""
    cmd = [sys.executable, *(wrap or []), "-m", "gateway", "serve", "--config", str(config)]
    extra = {
        "LLAMA_GATEWAY_LOG_LEVEL": "WARNING",
        "LLAMA_GATEWAY_UVLOOP": "1" if env.loop == "uvloop" else "0",
    }
    return cmd, extra


async def start_gateway(
    env: Env,
    name: str,
    fmt: str,
    upstream: str,
    algorithm: str = "round-robin",
    stream: bool = False,
    wrap: list[str] | None = None,
) -> tuple[Proc, int]:
    """Start the gateway pinned to the proxy CPU; its startup is spawn -> first 200
    (a non-stream request, or a one-chunk stream for stream-only upstream paths)."""
    config, port = gateway_config(env, name, fmt, upstream, algorithm)
    cmd, extra = gateway_command(env, config, wrap)
    proc = spawn(env, name, cmd, env.proxy_cpu, extra)
    probe = payloads.stream_body(1, 1) if stream else payloads.NONSTREAM_BODY
    proc.startup = await wait_ok(proc, port, "POST", CHAT_PATH, probe)
    _check_loop(env, proc)
    return proc, port


def _check_loop(env: Env, proc: Proc) -> None:
    used = loop_in_use(proc.pid)
    if used != env.loop:
        note = f"{proc.name} runs on {used}, not {env.loop}: its figures are not comparable"
        if note not in env.notes:
            env.notes.append(note)


async def start_floor(
    env: Env, name: str, upstream_port: int, wrap: list[str] | None = None
) -> tuple[Proc, int]:
    port = free_port()
    cmd = [
        sys.executable,
        *(wrap or []),
        str(BENCH / "floor.py"),
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
    ]
    if env.loop == "uvloop":
        cmd.append("--uvloop")
    proc = spawn(env, name, cmd, env.proxy_cpu)
    # The floor forwards any path: probe through it to the Ollama answer.
    proc.startup = await wait_ok(proc, port, "POST", "/api/chat", payloads.NONSTREAM_BODY)
    _check_loop(env, proc)
    return proc, port


# ------------------------------------------------------------------ load


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"non2xx":%%d,' ..
    '"p50_us":%%.1f,"p99_us":%%.1f,"mean_us":%%.1f,"max_us":%%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


async def nonstream_load(
    env: Env, port: int, path: str, concurrency: int, duration: int
) -> dict[str, Any]:
    if env.loadgen == "python":
        res = await client.load(port, path, payloads.NONSTREAM_BODY, concurrency, duration)
        return {**res.summary(), "loadgen": "python"}
    script = env.out / "wrk-post.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT % payloads.NONSTREAM_BODY.decode())
    cmd = [
        *env.pin(env.load_cpu),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), duration + 30)
    except TimeoutError:
        proc.kill()
        raise BenchError("wrk did not finish") from None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCHJSON "):
            d = json.loads(line[10:])
            dur = d["duration_us"] / 1e6
            return {
                "requests": d["requests"],
                "errors": d["errors"],
                "non2xx": d["non2xx"],
                "duration_s": dur,
                "rps": d["requests"] / dur if dur else 0.0,
                "p50_ms": d["p50_us"] / 1e3,
                "p99_ms": d["p99_us"] / 1e3,
                "mean_ms": d["mean_us"] / 1e3,
                "max_ms": d["max_us"] / 1e3,
                "loadgen": "wrk",
            }
    raise BenchError(f"wrk printed no result:\n{out.decode(errors='replace')[-2000:]}")


async def measure_nonstream(
    env: Env, port: int, path: str, pid: int | None, c1: bool = True
) -> dict[str, Any]:
    s = env.s
    if s.warmup:
        await client.load(port, path, payloads.NONSTREAM_BODY, s.concurrency, s.warmup)
    win = Window(env, pid)
    load = await nonstream_load(env, port, path, s.concurrency, s.duration)
    noise = win.stop()
    out: dict[str, Any] = {"c32": load, "window": noise}
    if pid and load["requests"]:
        out["cpu_us_per_req"] = noise["cpu_s"] * 1e6 / load["requests"]  # type: ignore[operator]
    if c1:
        out["c1"] = await nonstream_load(env, port, path, 1, s.c1_duration)
    return out


async def measure_streams(
    env: Env, port: int, path: str, pid: int | None, c1: bool = True
) -> dict[str, Any]:
    s = env.s
    n, iv = s.stream_chunks, s.stream_interval_ms
    body = payloads.stream_body(n, iv)
    timeout = n * iv / 1000 + 30
    # warm-up: a few short streams
    await client.streams(port, path, payloads.stream_body(4, 1), 8, 1, 0.0, 30)
    out: dict[str, Any] = {}
    if c1:
        res = await client.streams(port, path, body, 1, s.c1_streams, 0.0, timeout)
        out["c1"] = res.summary(n)
    win = Window(env, pid)
    # Starts spread over one stream's length: the streams' chunk schedules interleave
    # instead of ticking together, and no burst of 64 connects distorts the first chunks.
    stagger = n * iv / 1000 / s.workers
    res = await client.streams(port, path, body, s.workers, s.per_worker, stagger, timeout)
    noise = win.stop()
    summ = res.summary(n)
    out["concurrent"] = {**summ, "workers": s.workers}
    out["window"] = noise
    if pid and summ["chunks"]:
        out["cpu_us_per_chunk"] = noise["cpu_s"] * 1e6 / summ["chunks"]  # type: ignore[operator]
    return out


async def measure_slow(env: Env, port: int, path: str, pid: int | None) -> dict[str, Any]:
    s = env.s
    await client.fetch(env.py_port, "POST", "/_stats/reset")
    body = payloads.stream_body(s.slow_chunks, s.slow_interval_ms)
    timeout = s.slow_chunks * s.slow_interval_ms / 1000 + 60
    win = Window(env, pid)
    res = await client.streams(port, path, body, s.slow_streams, 1, 0.0, timeout)
    noise = win.stop()
    _, raw = await client.fetch(env.py_port, "GET", "/_stats")
    stats = json.loads(raw)
    return {
        **res.summary(s.slow_chunks),
        "max_open_upstream": stats["max_active"],
        "started_upstream": stats["started"],
        "window": noise,
    }


# ------------------------------------------------------------------ scenarios


async def sc_nonstream(env: Env, R: dict[str, Any]) -> None:
    r = R.setdefault("nonstream", {})
    up = env.ns_port
    r["direct"] = await measure_nonstream(env, up, "/api/chat", None)
    floor, port = await start_floor(env, "floor-nonstream", up)
    r["floor"] = await measure_nonstream(env, port, "/api/chat", floor.pid)
    stop(env, floor)
    r["floor"].update(startup_s=floor.startup, rss_peak_mib=floor.rss_peak_mib)
    gw, port = await start_gateway(
        env, "gateway-nonstream", "ollama", f"http://127.0.0.1:{up}/api/chat"
    )
    r["gateway"] = await measure_nonstream(env, port, CHAT_PATH, gw.pid)
    stop(env, gw)
    r["gateway"].update(startup_s=gw.startup, rss_peak_mib=gw.rss_peak_mib)


async def sc_balancer(env: Env, R: dict[str, Any]) -> None:
    r = R.setdefault("balancer", {})
    up = env.ns_port
    gw, port = await start_gateway(
        env,
        "gateway-lowest-latency",
        "ollama",
        f"http://127.0.0.1:{up}/api/chat",
        "lowest-latency",
    )
    r["lowest-latency"] = await measure_nonstream(env, port, CHAT_PATH, gw.pid, c1=False)
    stop(env, gw)
    r["lowest-latency"].update(startup_s=gw.startup, rss_peak_mib=gw.rss_peak_mib)


async def sc_stream(env: Env, R: dict[str, Any]) -> None:
    r = R.setdefault("stream", {})
    up = env.py_port
    r["direct"] = await measure_streams(env, up, "/api/chat", None)
    floor, port = await start_floor(env, "floor-stream", up)
    r["floor"] = await measure_streams(env, port, "/api/chat", floor.pid)
    stop(env, floor)
    r["floor"]["rss_peak_mib"] = floor.rss_peak_mib
    gw, port = await start_gateway(
        env, "gateway-stream", "ollama", f"http://127.0.0.1:{up}/api/chat"
    )
    r["gateway"] = await measure_streams(env, port, CHAT_PATH, gw.pid)
    stop(env, gw)
    r["gateway"]["rss_peak_mib"] = gw.rss_peak_mib


async def sc_slow(env: Env, R: dict[str, Any]) -> None:
    r = R.setdefault("slow", {})
    up = env.py_port
    r["direct"] = await measure_slow(env, up, "/api/chat", None)
    floor, port = await start_floor(env, "floor-slow", up)
    r["floor"] = await measure_slow(env, port, "/api/chat", floor.pid)
    stop(env, floor)
    r["floor"]["rss_peak_mib"] = floor.rss_peak_mib
    gw, port = await start_gateway(env, "gateway-slow", "ollama", f"http://127.0.0.1:{up}/api/chat")
    r["gateway"] = await measure_slow(env, port, CHAT_PATH, gw.pid)
    stop(env, gw)
    r["gateway"]["rss_peak_mib"] = gw.rss_peak_mib


_FORMATS = {
    # scenario: (gateway format, non-stream path, stream path)
    "raw": ("raw", "/generate", "/generate_stream"),
    "openai": ("openai", "/v1/chat/completions", "/v1/chat/completions"),
}


async def sc_format(env: Env, R: dict[str, Any], name: str) -> None:
    fmt, ns_path, st_path = _FORMATS[name]
    r = R.setdefault(name, {})
    up = env.ns_port
    floor, port = await start_floor(env, f"floor-{name}", up)
    r["floor"] = await measure_nonstream(env, port, ns_path, floor.pid, c1=False)
    stop(env, floor)
    gw, port = await start_gateway(env, f"gateway-{name}", fmt, f"http://127.0.0.1:{up}{ns_path}")
    r["gateway"] = await measure_nonstream(env, port, CHAT_PATH, gw.pid, c1=False)
    stop(env, gw)
    r["gateway"]["startup_s"] = gw.startup
    floor, port = await start_floor(env, f"floor-{name}-stream", env.py_port)
    r["floor_stream"] = await measure_streams(env, port, st_path, floor.pid, c1=False)
    stop(env, floor)
    gw, port = await start_gateway(
        env,
        f"gateway-{name}-stream",
        fmt,
        f"http://127.0.0.1:{env.py_port}{st_path}",
        stream=True,
    )
    r["gateway_stream"] = await measure_streams(env, port, CHAT_PATH, gw.pid, c1=False)
    stop(env, gw)


# ------------------------------------------------------------------ profiling


async def run_profiles(env: Env, R: dict[str, Any]) -> None:
    """Profile floor and gateway under the c32 non-stream load and the concurrent-stream
    load, in runs of their own after the measurements (a profiler never skews the table).

    Function-level shares come from bench/sampler.py (SIGPROF on the process's CPU time,
    started and stopped by signal around the measured window); the CPU per request or
    chunk of that same window turns them into µs. With py-spy installed, a flame graph
    of the gateway is recorded too (`--nonblocking`: see sampler.py for why)."""
    s = env.s
    secs = s.profile_seconds
    found: dict[str, Any] = {}
    R["profile"] = found
    spy = _py_spy()
    if spy is None:
        env.notes.append("py-spy not installed: no flame graphs (the profile tables remain)")
    cases = {
        "nonstream": (env.ns_port, "/api/chat"),
        "stream": (env.py_port, "/api/chat"),
    }
    for case, (up, path) in cases.items():
        found[case] = {}

        async def drive(seconds: float, port: int, cpath: str, case: str = case) -> int:
            if case == "nonstream":
                res = await client.load(
                    port, cpath, payloads.NONSTREAM_BODY, s.concurrency, seconds
                )
                return res.requests
            n, iv = s.stream_chunks, s.stream_interval_ms
            per = max(1, round(seconds / (n * iv / 1000)))
            sres = await client.streams(
                port,
                cpath,
                payloads.stream_body(n, iv),
                s.workers,
                per,
                n * iv / 1000 / s.workers,
                n * iv / 1000 + 30,
            )
            return sum(r.chunks for r in sres.records)

        for system in ("floor", "gateway"):
            out = env.out / f"profile-{case}-{system}.txt"
            wrap = [str(BENCH / "sampler.py"), "--out", str(out), "--wait-start"]
            if system == "floor":
                proc, port = await start_floor(env, f"floor-profile-{case}", up, wrap)
                cpath = path
            else:
                proc, port = await start_gateway(
                    env,
                    f"gateway-profile-{case}",
                    "ollama",
                    f"http://127.0.0.1:{up}{path}",
                    wrap=wrap,
                )
                cpath = CHAT_PATH
            await drive(max(s.warmup, 0.5), port, cpath)
            os.kill(proc.pid, signal.SIGUSR1)
            win = Window(env, proc.pid)
            units = await drive(secs, port, cpath)
            noise = win.stop()
            os.kill(proc.pid, signal.SIGUSR2)
            for _ in range(100):
                if out.exists() and out.stat().st_size:
                    break
                await asyncio.sleep(0.05)
            per_unit = noise["cpu_s"] * 1e6 / units if units else None  # type: ignore[operator]
            entry: dict[str, Any] = {
                "collapsed": str(out),
                "units": units,
                "unit": "request" if case == "nonstream" else "chunk",
                "cpu_us_per_unit": per_unit,
                "window": noise,
                "summary": profiles.summarize_collapsed(out, ROOT),
            }
            if system == "gateway" and spy is not None:
                entry["svg"] = await _py_spy_svg(env, spy, proc, case, drive, port, cpath)
            found[case][system] = entry
            stop(env, proc)


async def _py_spy_svg(
    env: Env, spy: str, proc: Proc, case: str, drive: Any, port: int, cpath: str
) -> str | None:
    target = env.out / f"profile-{case}-gateway.svg"
    secs = env.s.profile_seconds
    cmd = [
        *env.pin(env.load_cpu),
        spy,
        "record",
        "--pid",
        str(proc.pid),
        "--duration",
        str(secs),
        "--rate",
        "250",
        "-o",
        str(target),
        *env.args.py_spy_args.split(),
    ]
    spy_proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await drive(secs + 0.5, port, cpath)
    text, _ = await asyncio.wait_for(spy_proc.communicate(), 60)
    if not target.exists():
        env.notes.append(f"py-spy failed: {text.decode(errors='replace')[-300:]}")
        return None
    return str(target)


# ------------------------------------------------------------------ main


def choose_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if args.proxy_cpu is not None and args.load_cpu is not None:
        return args.load_cpu, args.proxy_cpu
    if len(cpus) < 2 or _which("taskset") is None:
        return None, None
    return cpus[0], cpus[-1]


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


async def amain(args: argparse.Namespace) -> int:
    notes: list[str] = []
    ensure_tools(args, notes)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s = Settings.make(args.quick, args.duration)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if 2 * s.slow_streams + 200 > nofile:
        s.slow_streams = max(10, (nofile - 200) // 2)
        notes.append(f"open-file limit {nofile}: slow streams reduced to {s.slow_streams}")
    load_cpu, proxy_cpu = choose_cpus(args)
    if load_cpu is None:
        notes.append("fewer than 2 CPUs or no taskset: nothing pinned, figures are indicative")
    else:
        os.sched_setaffinity(0, {load_cpu})
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if _which("wrk") else "python"
    elif loadgen == "wrk" and not _which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not installed")
    upstream = args.upstream
    if upstream == "auto":
        upstream = "nginx" if _which("nginx") else "python"
    elif upstream == "nginx" and not _which("nginx"):
        raise SystemExit("--upstream nginx: nginx is not installed")
    if loadgen == "python":
        notes.append("load generator: Python (bench/client.py); its capacity is the `direct` row")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / stamp
    out.mkdir(parents=True, exist_ok=True)
    env = Env(args, s, out, load_cpu, proxy_cpu, loadgen, upstream, notes)
    loops = _loops(args.uvloop)
    if args.uvloop in ("on", "both") and not _has_uvloop():
        raise SystemExit(f"--uvloop {args.uvloop}: uvloop is not installed")
    selected = [x for x in SCENARIOS if x in args.only]
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    started = time.monotonic()
    runners = {
        "nonstream": sc_nonstream,
        "balancer": sc_balancer,
        "stream": sc_stream,
        "slow": sc_slow,
        "raw": lambda e, r: sc_format(e, r, "raw"),
        "openai": lambda e, r: sc_format(e, r, "openai"),
    }
    try:
        await start_upstreams(env)
        for loop in loops:
            env.loop = loop
            R = results[loop] = {}
            for name in selected:
                t = time.monotonic()
                print(f"== {name} ({loop})", file=sys.stderr, flush=True)
                try:
                    await runners[name](env, R)
                except Exception as exc:  # one broken scenario must not hide the others
                    errors[f"{name} ({loop})"] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                    for proc in [p for p in env.procs if p.name not in ("upstream", "nginx")]:
                        stop(env, proc)
                print(f"   {time.monotonic() - t:.1f}s", file=sys.stderr, flush=True)
        if args.profile:
            env.loop = loops[0]
            print(f"== profile ({env.loop})", file=sys.stderr, flush=True)
            try:
                await run_profiles(env, results[env.loop])
            except Exception as exc:
                errors["profile"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    finally:
        for proc in list(reversed(env.procs)):
            stop(env, proc)
    meta = {
        "timestamp": stamp,
        "mode": "quick" if s.quick else "full",
        "machine": machine_info(),
        "load_cpu": load_cpu,
        "proxy_cpu": proxy_cpu,
        "loadgen": loadgen,
        "nonstream_upstream": upstream,
        "stream_upstream": "python (bench/stream_server.py)",
        "loops": loops,
        "settings": s.__dict__,
        "scenarios": selected,
        "notes": notes,
        "errors": errors,
        "elapsed_s": time.monotonic() - started,
    }
    tables = {loop: report.rows(R, s) for loop, R in results.items()}
    doc = {"meta": meta, "tables": tables, "results": results}
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = report.markdown(meta, tables, results)
    (out / "report.md").write_text(md)
    print(md)
    print(f"results: {out}", file=sys.stderr)
    return 1 if errors else 0


def _loops(choice: str) -> list[str]:
    """Event loops to measure, the gateway's default first: it runs on uvloop when
    installed. The floor always runs on the same loop as the gateway it is compared to."""
    if choice == "both":
        return ["uvloop", "asyncio"]
    if choice == "on" or (choice == "auto" and _has_uvloop()):
        return ["uvloop"]
    return ["asyncio"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark llama-gateway against a bare aiohttp proxy (the floor)."
    )
    p.add_argument("--quick", action="store_true", help="1-second runs, tiny concurrency")
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default all): {', '.join(SCENARIOS)}",
    )
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--upstream",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="non-stream upstream (streams always use bench/stream_server.py)",
    )
    p.add_argument(
        "--uvloop",
        choices=("auto", "on", "off", "both"),
        default="auto",
        help="event loop of floor and gateway (auto: uvloop when installed; both: run twice)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile floor and gateway under c32 and concurrent streams",
    )
    p.add_argument(
        "--py-spy-args",
        default="--nonblocking",
        help="arguments for the py-spy flame graph pass (default --nonblocking)",
    )
    p.add_argument("--duration", type=int, help="seconds per c32 measurement (default 5)")
    p.add_argument("--no-install", action="store_true", help="never apt-get/pip install")
    p.add_argument("--report", metavar="DIR", help="only re-render DIR/report.md from its json")
    p.add_argument("--out", default=str(BENCH / "results"))
    p.add_argument("--load-cpu", type=int)
    p.add_argument("--proxy-cpu", type=int)
    args = p.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if "balancer" in only:
        only.add("nonstream")  # the balancer rows compare with round-robin and the floor
    args.only = only
    return args


def rerender(directory: str) -> int:
    """Render report.md again from a run's results.json (after changing report.py)."""
    path = Path(directory) / "results.json"
    doc = json.loads(path.read_text())
    md = report.markdown(doc["meta"], doc["tables"], doc["results"])
    (path.parent / "report.md").write_text(md)
    print(md)
    return 0


def main() -> int:
    args = parse_args()
    if args.report:
        return rerender(args.report)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
