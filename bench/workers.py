"""1 worker vs 2 workers (`serve --workers 2`) on a 2-core machine: throughput and CPU
per request of non-stream requests at c32, against the same nginx upstream.

    python bench/workers.py              # 2-5 min: rounds until 2 clean windows each
    python bench/workers.py --quick      # ~20 s smoke run
    python bench/workers.py --rate 3000  # the fixed-rate comparison at 3,000 req/s

The load generator (wrk) and the upstream (nginx) need CPU too, and with 2 workers
there is no core left to give them alone. So the arrangements are:

- `1w isolated`: the gateway alone on CPU 1, wrk + nginx on CPU 0 (bench/run.py's);
- `2w on 1 core`: the same, with 2 workers sharing CPU 1 (what two processes cost
  where one would do, without the load side in the way);
- `1w shared`, `2w shared` (SO_REUSEPORT), `2w shared-socket` (one listening socket
  accepted on by both): nothing pinned, gateway, wrk and nginx share both cores as the
  kernel schedules them. 1 vs 2 workers is compared here, on the same arrangement.

For each window: throughput; the gateway's CPU per request (supervisor and workers,
from /proc); the load side's (nginx, wrk, the harness); the whole machine's (both
cores' busy time ÷ requests, so the box's cost of a request through the gateway);
latency; how the requests split between the workers. The box is shared, so CPU that no
process of the benchmark used ("foreign", beyond softirq) is measured too: a window
where it exceeds 5 % is left out and rounds go on until every arrangement has
`--repeat` clean windows (at most `--max-rounds`). Then a fixed-rate part (the
harness's own paced client, open loop at `--rate`, the same for both): CPU per request
and latency of 1 vs 2 workers at equal load, away from saturation.
Results: bench/results/workers-<UTC>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import client
import payloads
import run
from paced import paced_load
from run import CHAT_PATH, HZ, Env, Settings, cpu_stat, proc_ticks

ALL_CPUS = sorted(os.sched_getaffinity(0))
ARRANGEMENTS = {
    # name: (workers, socket mode, pinned: gateway on the last CPU, load on the first)
    "1w isolated": (1, "", True),
    "2w on 1 core": (2, "reuseport", True),  # the workers' own overhead, no contention
    "1w shared": (1, "", False),
    "2w shared": (2, "reuseport", False),
    "2w shared-socket": (2, "shared", False),
}


def pod_pids(root: int) -> list[int]:
    """The gateway process and its children (the workers)."""
    pids = [root]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (d / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == root:
                pids.append(int(d.name))
    return pids


def steal_ticks() -> int:
    """Ticks the hypervisor gave to others while we were runnable (all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


def _rusage(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class PodWindow:
    """CPU over one interval: the pod's processes, the load side (nginx and the
    upstream by pid; wrk, reaped during the window, as the harness's children; the
    harness itself) and the whole machine. What the machine spent beyond these is
    `foreign`: another process on the box, which makes the window suspect."""

    def __init__(self, pids: list[int], load_pids: list[int]) -> None:
        self.t0 = time.monotonic()
        self.p0 = {p: proc_ticks(p) for p in pids}
        self.l0 = {p: proc_ticks(p) for p in load_pids}
        self.c0 = _rusage(resource.RUSAGE_CHILDREN)
        self.h0 = _rusage(resource.RUSAGE_SELF)
        self.s0 = cpu_stat()
        self.steal0 = steal_ticks()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        own = sum(proc_ticks(p) - t for p, t in self.p0.items()) / HZ
        load = sum(proc_ticks(p) - t for p, t in self.l0.items()) / HZ
        load += _rusage(resource.RUSAGE_CHILDREN) - self.c0  # wrk
        load += _rusage(resource.RUSAGE_SELF) - self.h0  # the harness (paced client)
        s1 = cpu_stat()
        busy = sum(s1[c][0] - self.s0[c][0] for c in s1 if c in self.s0)
        total = sum(s1[c][1] - self.s0[c][1] for c in s1 if c in self.s0)
        # loopback networking done in softirq context is charged to no process
        softirq = sum(s1[c][2] - self.s0[c][2] for c in s1 if c in self.s0) / HZ
        steal = steal_ticks() - self.steal0
        machine = (busy - steal) / HZ  # steal: the hypervisor's time, not ours
        return {
            "wall_s": wall,
            "gateway_cpu_s": own,
            "load_cpu_s": load,
            "machine_busy_cpu_s": machine,
            "machine_busy_pct": 100 * (busy - steal) / total if total else float("nan"),
            "steal_pct": 100 * steal / total if total else float("nan"),
            "softirq_cpu_s": softirq,
            "foreign_pct": 100 * max(0.0, machine - own - load - softirq) * HZ / total
            if total
            else 0.0,
        }


async def start_pod(env: Env, name: str, workers: int, mode: str, pinned: bool) -> Any:
    config, port = run.gateway_config(
        env, name, "ollama", f"http://127.0.0.1:{env.ns_port}/api/chat"
    )
    cmd, extra = run.gateway_command(env, config)
    if workers > 1:
        cmd += ["--workers", str(workers)]
        extra["LLAMA_GATEWAY_WORKER_SOCKET"] = mode
    proc = run.spawn(env, name, cmd, ALL_CPUS[-1] if pinned else None, extra)
    proc.startup = await run.wait_ok(proc, port, "POST", CHAT_PATH, payloads.NONSTREAM_BODY)
    status_port = json.loads(config.read_text())["server"]["status_port"]
    return proc, port, status_port


def pin_load(env: Env, pinned: bool) -> None:
    """wrk is pinned when it starts (env.load_cpu); nginx is re-pinned in place."""
    env.load_cpu = ALL_CPUS[0] if pinned else None
    cpus = {ALL_CPUS[0]} if pinned else set(ALL_CPUS)
    for p in env.procs:
        if p.name == "nginx":
            os.sched_setaffinity(p.pid, cpus)
    os.sched_setaffinity(0, cpus)  # the harness (warm-up and the paced client)


async def per_worker(status_port: int) -> list[int]:
    _, raw = await client.fetch(status_port, "GET", "/status")
    doc = json.loads(raw)
    if "workers" not in doc:
        return []
    return [
        sum(t["requests"] for r in w["status"]["routes"] for t in r["targets"])
        for w in doc["workers"]
        if w.get("status")
    ]


async def measure(env: Env, name: str, rate: float | None) -> dict[str, Any]:
    workers, mode, pinned = ARRANGEMENTS[name]
    pin_load(env, pinned)
    proc, port, status_port = await start_pod(
        env, f"gw-{name.replace(' ', '-')}", workers, mode, pinned
    )
    try:
        s = env.s
        await client.load(port, CHAT_PATH, payloads.NONSTREAM_BODY, s.concurrency, s.warmup or 0.5)
        split0 = await per_worker(status_port)
        pids = pod_pids(proc.pid)
        win = PodWindow(pids, [p.pid for p in env.procs if p.name in ("nginx", "upstream")])
        if rate is None:
            load = await run.nonstream_load(env, port, CHAT_PATH, s.concurrency, s.duration)
        else:
            res = await paced_load(
                port, CHAT_PATH, payloads.NONSTREAM_BODY, s.concurrency, rate, s.duration
            )
            load = {**res.summary(), "rate": rate, "loadgen": "paced"}
        cpu = win.stop()
        split1 = await per_worker(status_port)
        n = load["requests"] or 1
        return {
            "arrangement": name,
            "workers": workers,
            "processes": len(pids),
            **{k: load.get(k) for k in ("requests", "rps", "p50_ms", "p99_ms", "errors", "non2xx")},
            **cpu,
            "gateway_cpu_us_per_req": cpu["gateway_cpu_s"] * 1e6 / n,
            "machine_cpu_us_per_req": cpu["machine_busy_cpu_s"] * 1e6 / n,
            "load_cpu_us_per_req": cpu["load_cpu_s"] * 1e6 / n,
            "worker_split": [b - a for a, b in zip(split0, split1, strict=False)],
        }
    finally:
        run.stop(env, proc)


NOISY = 5.0  # % of the machine used by other processes: the window is left out


def table(rows: list[dict[str, Any]], title: str) -> str:
    """Medians per arrangement over its clean windows (another process on the box used
    at most NOISY % of the machine); over all of them, marked, when none was clean."""
    head = (
        f"### {title}\n\n| arrangement | req/s | gateway CPU µs/req | load side µs/req "
        "| machine CPU µs/req | machine busy | p50 ms | p99 ms | requests per worker "
        "| clean windows |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
    )
    out = [head]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["arrangement"], []).append(r)
    for name, every in by.items():
        clean = [r for r in every if r["foreign_pct"] <= NOISY]
        rs = clean or every

        def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(float(r[k]) for r in rs)

        split = " / ".join("–".join(str(x) for x in sorted(r["worker_split"])) or "–" for r in rs)
        out.append(
            f"| {name} | {med('rps'):,.0f} | {med('gateway_cpu_us_per_req'):.0f} "
            f"| {med('load_cpu_us_per_req'):.0f} | {med('machine_cpu_us_per_req'):.0f} "
            f"| {med('machine_busy_pct'):.0f} % | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} "
            f"| {split} | {len(clean)}/{len(every)}{'' if clean else ' (noisy)'} |\n"
        )
    runs = "; ".join(
        f"{k}: " + ", ".join(f"{r['rps']:,.0f}" + ("*" if r["foreign_pct"] > NOISY else "")
                             for r in v)
        for k, v in by.items()
    )  # fmt: skip
    out.append(f"\nreq/s of every window (* = noisy, left out): {runs}\n")
    return "".join(out)


async def rounds(
    env: Env, rows: list[dict[str, Any]], names: list[str], rate: float | None, args: Any
) -> None:
    """Rounds of every arrangement, interleaved, until each has `--repeat` clean windows
    (the box is shared: other processes come and go), at most `--max-rounds`."""
    for _ in range(args.max_rounds):
        for name in names:
            print(f"== {name}" + (f" at {rate:g} req/s" if rate else ""), file=sys.stderr)
            rows.append(await measure(env, name, rate))
        clean = [
            sum(1 for r in rows if r["arrangement"] == n and r["foreign_pct"] <= NOISY)
            for n in names
        ]
        if min(clean) >= args.repeat:
            return


async def amain(args: argparse.Namespace) -> int:
    if len(ALL_CPUS) < 2:
        raise SystemExit("needs at least 2 CPUs")
    s = Settings.make(args.quick, args.duration)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / f"workers-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    loadgen = "wrk" if run._which("wrk") and not args.quick else "python"
    upstream = "nginx" if run._which("nginx") and not args.quick else "python"
    env = Env(args, s, out, ALL_CPUS[0], ALL_CPUS[-1], loadgen, upstream)
    env.loop = "uvloop" if run._has_uvloop() else "asyncio"
    rows: list[dict[str, Any]] = []
    paced: list[dict[str, Any]] = []
    try:
        await run.start_upstreams(env)
        await rounds(env, rows, list(ARRANGEMENTS), None, args)
        rate = args.rate or round(0.4 * statistics.median(
            r["rps"] for r in rows if r["arrangement"] == "1w shared"), -2)  # fmt: skip
        await rounds(env, paced, ["1w shared", "2w shared"], rate, args)
    finally:
        for proc in list(reversed(env.procs)):
            run.stop(env, proc)
    md = (
        f"## Workers: 1 vs 2 (run {stamp}, {loadgen} + {upstream}, {env.loop}, "
        f"c{s.concurrency}, {s.duration} s windows)\n\n"
        + table(rows, f"Closed loop, c{s.concurrency} ({loadgen})")
        + "\n"
        + table(paced, f"Fixed rate, {rate:g} req/s over c{s.concurrency} (paced Python client)")
    )
    (out / "results.json").write_text(json.dumps({"closed": rows, "paced": paced}, indent=2) + "\n")
    (out / "report.md").write_text(md)
    print(md)
    print(f"results: {out}", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1-second windows, Python load")
    p.add_argument("--duration", type=int, help="seconds per window (default 5)")
    p.add_argument("--repeat", type=int, default=2, help="clean windows per arrangement")
    p.add_argument("--max-rounds", type=int, default=5, help="rounds at most")
    p.add_argument("--rate", type=float, help="fixed rate (default 40 %% of 1w shared)")
    p.add_argument("--out", default=str(run.BENCH / "results"))
    p.add_argument("--no-install", action="store_true", default=True, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.repeat = args.max_rounds = 1
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
