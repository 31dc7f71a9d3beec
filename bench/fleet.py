"""Fleet benchmark: LLM-aware scheduling over three simulated llama.cpp servers of
different speeds, under open-loop Poisson load, one gateway configuration at a time.

    python bench/fleet.py             # full run (~9 min on 2 cores)
    python bench/fleet.py --quick     # smoke run (< 1 min): one load, short windows
    python bench/fleet.py --report DIR    # re-render DIR/report.md and the PNG

See bench/README.md ("Fleet benchmark") for the method and the goals. Results:
bench/results/fleet-<UTC timestamp>/ (report.md, results.json, configs/, logs/,
ttft.png); the report is also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the simulated servers live in the gateway package

import fleet_client  # noqa: E402
import fleet_report  # noqa: E402
import run  # noqa: E402  (the machine description both benchmarks report)

from gateway.sim import Behaviour, FakeUpstream  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
# name, tokens per second per slot (before time compression)
BOXES = (("box-a", 400.0), ("box-b", 200.0), ("box-c", 100.0))
SLOTS = 2
MEAN_TOKENS = 60
# Log-normal spread of output lengths: a median of ~44 tokens and a tail to a few
# hundred, like chat answers; lengths are clipped to [1, MAX_TOKENS].
SIGMA = 0.8
MAX_TOKENS = 1024
# The fakes want to say more than any request allows, so max_tokens always ends the
# answer and the client can check it got exactly that many tokens.
WANTED_TOKENS = 4096
ALGORITHMS = fleet_report.ALGORITHMS
QUEUE = {"max_size": 10000, "timeout": 120000}
KILL_BOX = "box-a"  # the fastest: the most work to move, the hardest case
KILL_ALGORITHM = "least-busy"


class BenchError(Exception):
    pass


class Refused(BenchError):
    """The gateway exited at startup: it does not accept this configuration."""


@dataclass(frozen=True)
class Settings:
    quick: bool
    loads: tuple[float, ...]
    window: float  # seconds of arrivals per run (compressed time)
    compression: float  # token rates and arrival rates are both multiplied by this
    drain: float  # a run ends at most this long after its window
    seed: int

    @classmethod
    def make(cls, args: argparse.Namespace) -> Settings:
        if args.quick:
            s = cls(True, (0.85,), 4.0, 2.0, 10.0, args.seed)
        else:
            s = cls(False, (0.70, 0.85, 0.95), 15.0, 2.0, 30.0, args.seed)
        if args.window:
            s = cls(s.quick, s.loads, args.window, s.compression, s.drain, s.seed)
        if args.compression:
            s = cls(s.quick, s.loads, s.window, args.compression, s.drain, s.seed)
        return s

    def tps(self, base: float) -> float:
        return base * self.compression

    @property
    def fleet_tps(self) -> float:
        """Tokens per second the whole fleet generates with every slot busy."""
        return sum(SLOTS * self.tps(tps) for _, tps in BOXES)

    @property
    def capacity_rps(self) -> float:
        return self.fleet_tps / MEAN_TOKENS


@dataclass(frozen=True)
class Config:
    algorithm: str
    capacity: bool  # max_concurrency = slots on every target + the admission queue

    @property
    def label(self) -> str:
        return f"{self.algorithm} + cap" if self.capacity else self.algorithm

    @property
    def slug(self) -> str:
        return f"{self.algorithm}-cap" if self.capacity else self.algorithm


CONFIGS = tuple(Config(a, cap) for cap in (False, True) for a in ALGORITHMS)


# ------------------------------------------------------------------ workload


@dataclass(frozen=True)
class Workload:
    load: float
    arrivals: list[float]  # seconds from the run's start
    lengths: list[int]  # max_tokens of each request
    rate: float  # requests per second

    @property
    def mean_tokens(self) -> float:
        return sum(self.lengths) / len(self.lengths) if self.lengths else math.nan


def draws(seed: int, n: int) -> tuple[list[float], list[int]]:
    """Unit exponential gaps and output lengths, from separate seeded streams so one
    never shifts the other; every load and configuration uses these same draws."""
    gaps_rng, len_rng = random.Random(seed), random.Random(seed + 1)
    mu = math.log(MEAN_TOKENS) - SIGMA**2 / 2  # a log-normal with mean MEAN_TOKENS
    gaps = [gaps_rng.expovariate(1.0) for _ in range(n)]
    lengths = [min(MAX_TOKENS, max(1, round(len_rng.lognormvariate(mu, SIGMA)))) for _ in range(n)]
    return gaps, lengths


def workload(s: Settings, load: float) -> Workload:
    """`load` × capacity over the window, capacity taken on the mean of the lengths
    actually drawn (so the offered load is what it says, not off by the sample's luck)."""
    n = max(1, round(load * s.capacity_rps * s.window))
    gaps, lengths = draws(s.seed, n)
    mean = sum(lengths) / n
    rate = load * s.fleet_tps / mean
    t, arrivals = 0.0, []
    for g in gaps:
        t += g / rate
        arrivals.append(t)
    return Workload(load, arrivals, lengths, rate)


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def choose_cpus() -> tuple[int | None, int | None]:
    """(harness CPU, gateway CPU): one core each when there are two and taskset."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[-1]


def gateway_config(
    cfg: Config, boxes: list[FakeUpstream], port: int, status_port: int
) -> dict[str, Any]:
    balancer: dict[str, Any] = {"algorithm": cfg.algorithm}
    if cfg.capacity:
        balancer["queue"] = dict(QUEUE)
    targets = []
    for box in boxes:
        target: dict[str, Any] = {
            "name": box.name,
            "route_type": "llm/v1/chat",
            "model": {
                "provider": "llama2",
                "name": "llama2",
                "options": {
                    "llama2_format": "openai",
                    "upstream_url": box.url("/v1/chat/completions"),
                },
            },
        }
        if cfg.capacity:
            target["max_concurrency"] = SLOTS
        targets.append(target)
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "status_host": "127.0.0.1",
            "status_port": status_port,
            "drain_timeout": 1,
        },
        "routes": [
            {
                "name": "fleet",
                "paths": [fleet_client.PATH],
                "plugin": "ai-proxy-advanced",
                "config": {"balancer": balancer, "targets": targets},
            }
        ],
    }


class Gateway:
    """`python -m gateway serve` on a generated config, pinned to its own CPU."""

    def __init__(self, name: str, config: Path, log: Path, cpu: int | None) -> None:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        cmd = [*pin, sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        env = {**os.environ, "LLAMA_GATEWAY_LOG_LEVEL": "WARNING"}
        self.name = name
        self.log = log
        with log.open("wb") as fh:
            self.popen = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )

    def tail(self, n: int = 12) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def ready(self, status_port: int, limit: float = 20.0) -> float:
        """Seconds until /readyz answers 200; a clear error when the gateway exits
        first (a config it refuses) or never gets ready."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if self.popen.poll() is not None:
                raise Refused(f"gateway exited ({self.popen.returncode}): {self.refusal()}")
            with contextlib.suppress(OSError, TimeoutError):
                if await _status(status_port, "/readyz") == 200:
                    return time.monotonic() - t0
            await asyncio.sleep(0.02)
        raise BenchError(f"gateway not ready within {limit:.0f}s:\n{self.tail()}")

    def refusal(self) -> str:
        """The config errors the gateway printed, or the end of its log."""
        text = self.tail(40)
        errors = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("routes[")]
        return "; ".join(errors) if errors else text

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


async def _status(port: int, path: str) -> int:
    async def go() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
        finally:
            writer.close()
        return int(line.split()[1]) if line.startswith(b"HTTP/1.") else 0

    return await asyncio.wait_for(go(), 2.0)


# ------------------------------------------------------------------ one run


@dataclass
class Env:
    s: Settings
    out: Path
    harness_cpu: int | None
    gateway_cpu: int | None


async def run_one(
    env: Env, cfg: Config, w: Workload, *, kill: str | None = None, tag: str = ""
) -> dict[str, Any]:
    """One configuration at one load: fresh servers, a fresh gateway, the workload."""
    s = env.s
    name = f"{cfg.slug}-{round(w.load * 100)}{tag}"
    boxes = [
        FakeUpstream(
            "llamacpp",
            name=box,
            slots=SLOTS,
            behaviour=Behaviour(tokens_per_second=s.tps(tps), n_tokens=WANTED_TOKENS),
        )
        for box, tps in BOXES
    ]
    for box in boxes:
        await box.start()
    gw: Gateway | None = None
    try:
        port, status_port = free_port(), free_port()
        config = env.out / "configs" / f"{name}.yaml"
        # JSON is valid YAML, and keeps the file byte-for-byte what was measured.
        config.write_text(json.dumps(gateway_config(cfg, boxes, port, status_port), indent=2))
        gw = Gateway(name, config, env.out / "logs" / f"{name}.log", env.gateway_cpu)
        startup = await gw.ready(status_port)
        events = []
        if kill is not None:
            victim = next(b for b in boxes if b.name == kill)
            events.append((w.arrivals[-1] / 3, victim.kill))
        limit = (w.arrivals[-1] if w.arrivals else 0.0) + s.drain
        gw_ticks, cpu0 = proc_ticks(gw.popen.pid), own_cpu()
        gc.collect()
        gc.disable()  # no collector pauses inside the measured window
        try:
            res = await fleet_client.open_loop(port, w.arrivals, w.lengths, limit, events)
        finally:
            gc.enable()
        gw_cpu = (proc_ticks(gw.popen.pid) - gw_ticks) / HZ
        harness_cpu = own_cpu() - cpu0
        exited = gw.popen.poll()
    finally:
        if gw is not None:
            gw.stop()
        for box in boxes:
            await box.stop()
    return {
        "config": cfg.label,
        "algorithm": cfg.algorithm,
        "capacity": cfg.capacity,
        "load": w.load,
        "name": name,
        "kill": kill,
        "gateway_startup_s": startup,
        "gateway_exited": exited,
        "elapsed_s": res.elapsed,
        "gateway_cpu_pct": 100 * gw_cpu / res.elapsed if res.elapsed else math.nan,
        "harness_cpu_pct": 100 * harness_cpu / res.elapsed if res.elapsed else math.nan,
        "loop_lag_ms": fleet_report.percentiles([x * 1e3 for x in res.loop_lag], (50, 99, 100)),
        "boxes": [
            {
                "name": box.name,
                "tokens_per_second": box.behaviour.tokens_per_second,
                "slots": SLOTS,
                "started": box.pool.started,
                "served": box.completed,
                "max_active": box.max_active,
                "max_held": box.max_held,
                "killed_active": box.killed_active,
                "killed_waiting": box.killed_waiting,
            }
            for box in boxes
        ],
        "requests": [asdict(r) for r in res.records],
    }


# ------------------------------------------------------------------ main


async def amain(args: argparse.Namespace) -> int:
    s = Settings.make(args)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    harness_cpu, gateway_cpu = choose_cpus()
    notes: list[str] = []
    if harness_cpu is None:
        notes.append("fewer than 2 CPUs or no taskset: nothing pinned, figures are indicative")
    else:
        os.sched_setaffinity(0, {harness_cpu})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / f"fleet-{stamp}"
    (out / "configs").mkdir(parents=True)
    (out / "logs").mkdir()
    env = Env(s, out, harness_cpu, gateway_cpu)
    wanted = [c for c in CONFIGS if not args.only or c.slug in args.only]
    runs: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    workloads = {load: workload(s, load) for load in s.loads}
    started = time.monotonic()
    plan: list[tuple[Config, float, str | None]] = [
        (c, load, None) for load in s.loads for c in wanted
    ]
    if not args.no_kill:
        plan.append((Config(KILL_ALGORITHM, True), 0.85, KILL_BOX))
    refused: dict[Config, str] = {}
    for cfg, load, kill in plan:
        label = f"{cfg.label} @ {round(load * 100)} %" + (f", {kill} killed" if kill else "")
        if cfg in refused:
            errors[label] = refused[cfg]
            print(f"== {label}: skipped, {refused[cfg]}", file=sys.stderr, flush=True)
            continue
        w = workloads.get(load) or workload(s, load)
        t = time.monotonic()
        print(f"== {label}: {len(w.arrivals)} requests", file=sys.stderr, flush=True)
        try:
            run = await run_one(env, cfg, w, kill=kill, tag="-kill" if kill else "")
        except Refused as exc:
            refused[cfg] = errors[label] = f"the gateway refuses this configuration: {exc}"
            print(f"   ERROR {errors[label]}", file=sys.stderr, flush=True)
            continue
        except BenchError as exc:
            errors[label] = str(exc)
            print(f"   ERROR {errors[label]}", file=sys.stderr, flush=True)
            continue
        run["scenario"] = "kill" if kill else "load"
        runs.append(run)
        print(f"   {fleet_report.one_line(run)}  ({time.monotonic() - t:.1f}s)", file=sys.stderr)
    meta = {
        "timestamp": stamp,
        "mode": "quick" if s.quick else "full",
        "settings": asdict(s),
        "boxes": [{"name": n, "tokens_per_second": t, "slots": SLOTS} for n, t in BOXES],
        "mean_tokens": MEAN_TOKENS,
        "sigma": SIGMA,
        "max_tokens": MAX_TOKENS,
        "fleet_tokens_per_second": s.fleet_tps,
        "capacity_rps": s.capacity_rps,
        "workloads": {
            str(load): {
                "requests": len(w.arrivals),
                "rate_rps": w.rate,
                "mean_tokens": w.mean_tokens,
                "window_s": w.arrivals[-1] if w.arrivals else 0.0,
            }
            for load, w in workloads.items()
        },
        "queue": QUEUE,
        "kill": {"box": KILL_BOX, "algorithm": KILL_ALGORITHM, "load": 0.85, "at": "1/3"},
        "harness_cpu": harness_cpu,
        "gateway_cpu": gateway_cpu,
        "machine": machine_info(),
        "notes": notes,
        "errors": errors,
        "elapsed_s": time.monotonic() - started,
    }
    doc = {"meta": meta, "runs": runs}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return render(out, doc, plot=not args.no_plot)


def render(out: Path, doc: dict[str, Any], plot: bool = True) -> int:
    meta, runs = doc["meta"], doc["runs"]
    png = None
    if plot:
        try:
            png = fleet_report.plot(runs, out / "ttft.png")
        except fleet_report.PlotUnavailable as exc:
            print(f"no PNG: {exc}", file=sys.stderr)
            meta.setdefault("notes", []).append(f"no PNG: {exc}")
    md = fleet_report.markdown(meta, runs, png)
    (out / "report.md").write_text(md)
    print(md)
    print(f"results: {out}", file=sys.stderr)
    return 1 if meta.get("errors") else 0


def machine_info() -> dict[str, Any]:
    return {**run.machine_info(), "event_loop": type(asyncio.get_event_loop_policy()).__module__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Scheduling across a simulated llama.cpp fleet.")
    p.add_argument("--quick", action="store_true", help="85 %% load only, 4-second windows")
    p.add_argument("--seed", type=int, default=12, help="workload seed (default 12)")
    p.add_argument("--window", type=float, help="seconds of arrivals per run")
    p.add_argument("--compression", type=float, help="time compression factor (default 2)")
    p.add_argument(
        "--only",
        help="comma-separated configurations, e.g. round-robin,least-busy-cap (default: all eight)",
    )
    p.add_argument("--no-kill", action="store_true", help="skip the kill scenario")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument("--report", metavar="DIR", help="only re-render DIR's report and PNG")
    p.add_argument("--out", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    if args.only:
        args.only = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = args.only - {c.slug for c in CONFIGS}
        if unknown:
            p.error(f"unknown configuration(s) {sorted(unknown)}: {[c.slug for c in CONFIGS]}")
    return args


def main() -> int:
    args = parse_args()
    if args.report:
        directory = Path(args.report)
        doc = json.loads((directory / "results.json").read_text())
        return render(directory, doc, plot=not args.no_plot)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
