"""The fleet benchmark's figures: per-run statistics, the goals, report.md and the PNG.

Works from results.json alone (`fleet.py --report DIR` re-renders an old run).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

GOAL_RATIO = 0.8  # p99 TTFT with capacity + queue vs least-connections without
GOAL_LOAD = 0.85
BASELINE = "least-connections"
ALGORITHMS = ("round-robin", "least-connections", "lowest-latency", "least-busy")


class PlotUnavailable(Exception):
    pass


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def percentiles(values: Iterable[float], ps: Sequence[float]) -> dict[str, float]:
    v = sorted(values)
    return {f"p{p:g}": pct(v, p) for p in ps}


def stats(run: dict[str, Any]) -> dict[str, Any]:
    """Served/lost and the latency percentiles (ms) of one run, over served requests."""
    reqs = run["requests"]
    served = [r for r in reqs if _served(r)]
    ttft = sorted(r["ttft"] * 1e3 for r in served)
    total = sorted(r["total"] * 1e3 for r in served)
    reasons = Counter(_failure(r) for r in reqs if not _served(r))
    lag = sorted(r["lag"] * 1e3 for r in reqs if not math.isnan(r["lag"]))
    return {
        "requests": len(reqs),
        "served": len(served),
        "lost": len(reqs) - len(served),
        "reasons": dict(reasons.most_common()),
        "ttft_p50": pct(ttft, 50),
        "ttft_p95": pct(ttft, 95),
        "ttft_p99": pct(ttft, 99),
        "total_p50": pct(total, 50),
        "total_p99": pct(total, 99),
        "send_lag_p99": pct(lag, 99),
    }


def _served(r: dict[str, Any]) -> bool:
    return bool(
        r["status"] == 200
        and r["done"]
        and r["complete"]
        and r["tokens"] == r["max_tokens"]
        and not r["error"]
    )


def _failure(r: dict[str, Any]) -> str:
    if r["error"] and r["status"] == 0:
        return str(r["error"])
    if r["status"] != 200:
        return f"status {r['status']}"
    if r["error"]:
        return f"stream error: {r['error']}"
    return "broken stream"


def timeline(run: dict[str, Any], parts: int = 5) -> list[float]:
    """TTFT p50 (ms) of the served requests arriving in each `parts`-th of the window."""
    reqs = run["requests"]
    end = max((r["at"] for r in reqs), default=0.0) or 1.0
    buckets: list[list[float]] = [[] for _ in range(parts)]
    for r in reqs:
        if _served(r):
            buckets[min(parts - 1, int(r["at"] / end * parts))].append(r["ttft"] * 1e3)
    return [pct(sorted(b), 50) for b in buckets]


def over_slots(run: dict[str, Any]) -> list[str]:
    """Servers that held more requests than they have slots (running + queued)."""
    return [
        f"{b['name']} held {b['max_held']}"
        for b in run["boxes"]
        if b.get("max_held", b["max_active"]) > b["slots"]
    ]


def one_line(run: dict[str, Any]) -> str:
    st = stats(run)
    held = "/".join(str(b.get("max_held", "?")) for b in run["boxes"])
    return (
        f"served {st['served']}/{st['requests']}, TTFT p50 {st['ttft_p50']:.0f} ms "
        f"p99 {st['ttft_p99']:.0f} ms, held at most {held} (slots {run['boxes'][0]['slots']})"
    )


def _ms(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def _find(runs: list[dict[str, Any]], algorithm: str, capacity: bool, load: float) -> Any:
    for run in runs:
        if (
            run.get("scenario", "load") == "load"
            and run["algorithm"] == algorithm
            and run["capacity"] == capacity
            and abs(run["load"] - load) < 1e-9
        ):
            return run
    return None


def goals(meta: dict[str, Any], runs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) rows; verdict "holds", "FAILS" or "not measured"."""
    rows: list[tuple[str, str, str]] = []
    algorithms = sorted(set(ALGORITHMS) | {r["algorithm"] for r in runs}, key=_algo_order)
    base = _find(runs, BASELINE, False, GOAL_LOAD)
    base_p99 = stats(base)["ttft_p99"] if base else math.nan
    for algo in algorithms:
        goal = f"{algo} + cap: p99 TTFT at {GOAL_LOAD:.0%} ≤ {GOAL_RATIO}× {BASELINE} without cap"
        run = _find(runs, algo, True, GOAL_LOAD)
        if run is None or base is None:
            rows.append((goal, "", "not measured"))
            continue
        p99 = stats(run)["ttft_p99"]
        ratio = p99 / base_p99 if base_p99 else math.nan
        verdict = "holds" if ratio <= GOAL_RATIO else "FAILS"
        rows.append((goal, f"{_ms(p99)} vs {_ms(base_p99)} ms (× {ratio:.2f})", verdict))
    cap_runs = [r for r in runs if r["capacity"] and r.get("scenario", "load") == "load"]
    for algo in algorithms:
        mine = [r for r in cap_runs if r["algorithm"] == algo]
        goal = f"{algo} + cap: every request served, every load"
        if not mine:
            rows.append((goal, "", "not measured"))
            continue
        lost = sum(stats(r)["lost"] for r in mine)
        total = sum(stats(r)["requests"] for r in mine)
        rows.append((goal, f"{lost} lost of {total}", "holds" if lost == 0 else "FAILS"))
    for algo in algorithms:
        mine = [r for r in runs if r["capacity"] and r["algorithm"] == algo]
        goal = f"{algo} + cap: no server ever held more requests than its slots"
        if not mine:
            rows.append((goal, "", "not measured"))
            continue
        over = [f"{r['name']}: {', '.join(o)}" for r in mine if (o := over_slots(r))]
        peak = max(b.get("max_held", 0) for r in mine for b in r["boxes"])
        measured = "; ".join(over) if over else f"at most {peak} per server"
        rows.append((goal, measured, "FAILS" if over else "holds"))
    kill = [r for r in runs if r.get("scenario") == "kill"]
    k = meta.get("kill", {})
    goal = (
        f"{k.get('algorithm', '?')} + cap at {k.get('load', 0):.0%}, {k.get('box', '?')} "
        "killed a third of the way through: every request not already streaming from it "
        "is served (queued ones go to the survivors)"
    )
    if not kill:
        rows.append((goal, "", "not measured"))
    else:
        st = stats(kill[0])
        victim = next((b for b in kill[0]["boxes"] if b.get("killed_active") is not None), None)
        cut = victim["killed_active"] if victim else 0
        measured = f"{st['lost']} lost of {st['requests']} ({cut} generating on it at the kill)"
        # A stream that has sent tokens cannot move to another server: those are the
        # only losses the gateway cannot prevent.
        rows.append((goal, measured, "holds" if st["lost"] <= cut else "FAILS"))
    return rows


def _algo_order(a: str) -> int:
    return ALGORITHMS.index(a) if a in ALGORITHMS else len(ALGORITHMS)


def markdown(meta: dict[str, Any], runs: list[dict[str, Any]], png: Path | None) -> str:
    s = meta["settings"]
    c = s["compression"]
    boxes = ", ".join(
        f"{b['name']} {b['tokens_per_second']:g} tokens/s × {b['slots']} slots"
        for b in meta["boxes"]
    )
    out = [
        f"# Fleet benchmark — {meta['timestamp']} ({meta['mode']})",
        "",
        f"Servers (simulated llama.cpp, uncompressed speeds per slot): {boxes}. "
        f"Fleet capacity {meta['fleet_tokens_per_second'] / c:,.0f} tokens/s = "
        f"{meta['capacity_rps'] / c:.1f} requests/s at {meta['mean_tokens']} tokens mean.",
        f"Time compression × {c:g}: token and arrival rates run {c:g}× faster, so every "
        f"time below is measured wall time, {c:g}× shorter than the same fleet uncompressed "
        "(gateway and client overheads do not shrink).",
        f"Output lengths log-normal (mean {meta['mean_tokens']}, σ {meta['sigma']}, "
        f"clipped to 1..{meta['max_tokens']}), Poisson arrivals, seed {s['seed']}: the same "
        "requests at the same times for every configuration of a load.",
        "",
        "| load | requests | rate (req/s) | mean tokens | arrivals over |",
        "|---|---|---|---|---|",
    ]
    for load, w in meta["workloads"].items():
        out.append(
            f"| {float(load):.0%} | {w['requests']} | {w['rate_rps']:.1f} | "
            f"{w['mean_tokens']:.1f} | {w['window_s']:.1f} s |"
        )
    out += ["", "## Goals", "", "| goal | measured | verdict |", "|---|---|---|"]
    out += [f"| {g} | {m} | {v} |" for g, m, v in goals(meta, runs)]
    out += [
        "",
        "## Latency (ms, from the scheduled arrival; served requests only)",
        "",
        "`+ cap`: `max_concurrency: 2` on every target and "
        f"`balancer.queue: {meta['queue']}`. Served per server and the most requests each "
        "held at once (generating + queued inside it) are in server order "
        f"{' / '.join(b['name'] for b in meta['boxes'])}.",
        "",
        "| load | configuration | served | lost | TTFT p50 | p95 | p99 | done p50 | p99 "
        "| served per server | held at most (slots 2) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(
        (r for r in runs if r.get("scenario", "load") == "load"),
        key=lambda r: (r["load"], r["capacity"], _algo_order(r["algorithm"])),
    ):
        out.append(_row(run))
    kill = [r for r in runs if r.get("scenario") == "kill"]
    if kill:
        k = meta["kill"]
        out += [
            "",
            f"## Kill: {k['box']} dies a third of the way through ({k['algorithm']} + cap, "
            f"{k['load']:.0%})",
            "",
            "| load | configuration | served | lost | TTFT p50 | p95 | p99 | done p50 | p99 "
            "| served per server | held at most (slots 2) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            _row(kill[0]),
            "",
        ]
        for b in kill[0]["boxes"]:
            if b.get("killed_active") is not None:
                out.append(
                    f"At the kill {b['name']} was generating {b['killed_active']} and "
                    f"holding {b['killed_waiting']} more in its queue; a stream that had "
                    "sent its first token cannot move to another server."
                )
    out += [
        "",
        "## TTFT p50 through each run (ms, by fifth of the arrival window)",
        "",
        "Flat: the fleet keeps up. Rising: a queue grows for as long as requests arrive "
        "(more work is sent somewhere than it can do). A jump: something stalled.",
        "",
        "| run | 1st | 2nd | 3rd | 4th | 5th |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        out.append(f"| {run['name']} | " + " | ".join(_ms(x) for x in timeline(run)) + " |")
    lost_runs = [(r, stats(r)) for r in runs if stats(r)["lost"]]
    if lost_runs:
        out += ["", "## Lost requests", "", "| run | lost | why (count) |", "|---|---|---|"]
        for run, st in lost_runs:
            why = "; ".join(f"{k} ({n})" for k, n in st["reasons"].items())
            out.append(f"| {run['name']} | {st['lost']} | {why} |")
    out += [
        "",
        "## Noise",
        "",
        "Client, simulated servers and harness share one event loop on one core; the "
        "gateway has the other. Loop lag: how late a 10 ms timer fires in the harness; "
        "send lag: how late the client sent a request after its scheduled time (counted "
        "in its TTFT). Both should stay a small fraction of the TTFTs compared.",
        "",
        "| run | gateway CPU | harness CPU | loop lag p99 / max | send lag p99 | wall |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        lag = run["loop_lag_ms"]
        out.append(
            f"| {run['name']} | {run['gateway_cpu_pct']:.0f} % | {run['harness_cpu_pct']:.0f} % "
            f"| {_ms(lag['p99'])} / {_ms(lag['p100'])} ms | {_ms(stats(run)['send_lag_p99'])} ms "
            f"| {run['elapsed_s']:.1f} s |"
        )
    if png is not None:
        out += ["", f"![TTFT versus load]({png.name})"]
    errors = meta.get("errors") or {}
    if errors:
        out += ["", "## Not measured", ""]
        out += [f"- **{k}**: {v}" for k, v in errors.items()]
    notes = meta.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    m = meta["machine"]
    out += [
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, aiohttp {m['aiohttp']}; "
        f"harness on CPU {meta['harness_cpu']}, gateway on CPU {meta['gateway_cpu']}; "
        f"{meta['elapsed_s']:.0f} s in all.",
        "",
    ]
    return "\n".join(out)


def _row(run: dict[str, Any]) -> str:
    st = stats(run)
    served = " / ".join(str(b["served"]) for b in run["boxes"])
    held = " / ".join(
        f"**{b['max_held']}**" if b["max_held"] > b["slots"] else str(b["max_held"])
        for b in run["boxes"]
    )
    return (
        f"| {run['load']:.0%} | {run['config']} | {st['served']} | {st['lost']} | "
        f"{_ms(st['ttft_p50'])} | {_ms(st['ttft_p95'])} | {_ms(st['ttft_p99'])} | "
        f"{_ms(st['total_p50'])} | {_ms(st['total_p99'])} | {served} | {held} |"
    )


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """TTFT p99 and p50 versus load, one line per configuration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "matplotlib is not installed: pip install -e '.[bench]' (or pip install "
            f"'matplotlib>=3.8'), then `python bench/fleet.py --report DIR` ({exc})"
        ) from exc
    load_runs = [r for r in runs if r.get("scenario", "load") == "load"]
    if not load_runs:
        raise PlotUnavailable("no load run succeeded: nothing to plot")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    colours = dict(zip(ALGORITHMS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
    labels = sorted(
        {(r["algorithm"], r["capacity"]) for r in load_runs},
        key=lambda k: (k[1], _algo_order(k[0])),
    )
    for ax, key, title in ((axes[0], "ttft_p99", "TTFT p99"), (axes[1], "ttft_p50", "TTFT p50")):
        for algo, cap in labels:
            pts = sorted(
                (r["load"] * 100, stats(r)[key])
                for r in load_runs
                if r["algorithm"] == algo and r["capacity"] == cap
            )
            ax.plot(
                [x for x, _ in pts],
                [y for _, y in pts],
                marker="o" if cap else "x",
                linestyle="-" if cap else "--",
                color=colours.get(algo, "black"),
                label=f"{algo} + cap" if cap else algo,
            )
        ax.set_title(title)
        ax.set_xlabel("offered load (% of fleet capacity)")
        ax.set_ylabel("ms (log scale)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("Time to first token versus load (solid: max_concurrency + queue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
