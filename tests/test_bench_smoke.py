"""Smoke test of the benchmark (`bench/run.py --quick`), so it cannot rot.

It runs the real thing as a subprocess — upstreams, floor proxy and gateway processes,
load generator — for about a second per measurement at tiny concurrency, and checks
that the report has every row filled and no scenario failed. Timings are never
asserted: on a shared CI machine they mean nothing.

The first test uses whatever is installed (wrk and nginx when present); the second
forces the Python load generator and upstream, the path a fresh machine without wrk
or nginx takes, so both stay working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Half the suite's wall time: CI runs it, a developer's quick run skips it
# (`pytest -m "not bench"`).
pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run.py"

# Every row of the ratio table, by the start of its metric text.
ROWS = (
    "non-stream throughput at c4 (ollama, round-robin)",
    "non-stream CPU per request",
    "added latency p50 at c1",
    "added latency p99 at c1",
    "peak RSS, non-stream",
    "startup to first 200",
    "stream: added TTFT p50 at c1",
    "stream: added total time p50 at c1",
    "stream: CPU per relayed chunk",
    "stream: chunk lateness p50",
    "stream: chunk lateness p99",
    "stream: chunk lateness max",
    "stream: streams complete",
    "20 slow streams (3 × 100 ms): complete",
    "20 slow streams (3 × 100 ms): max open upstream at once",
    "20 slow streams (3 × 100 ms): TTFT p50",
    "20 slow streams (3 × 100 ms): TTFT p99",
    "20 slow streams (3 × 100 ms): chunk lateness p99",
    "20 slow streams (3 × 100 ms): peak RSS",
    "raw (hf/TGI): non-stream throughput",
    "raw (hf/TGI): non-stream CPU per request",
    "raw (hf/TGI): stream CPU per relayed chunk",
    "raw (hf/TGI): stream chunk lateness p99",
    "openai: non-stream throughput",
    "openai: non-stream CPU per request",
    "openai: stream CPU per relayed chunk",
    "openai: stream chunk lateness p99",
    "lowest-latency: non-stream throughput",
    "lowest-latency: CPU per request",
)


def run_bench(out: Path, *extra: str, timeout: float) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-install", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    (result,) = out.glob("*/results.json")
    doc = json.loads(result.read_text())
    assert (result.parent / "report.md").read_text().strip() == proc.stdout.strip()
    return proc.stdout, doc


def table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ")]


def test_quick_run_fills_every_row(tmp_path: Path) -> None:
    report, doc = run_bench(tmp_path, timeout=60)
    meta = doc["meta"]
    assert meta["errors"] == {}
    assert meta["mode"] == "quick"
    (loop,) = meta["loops"]
    rows = doc["tables"][loop]
    assert [r["metric"] for r in rows if r["metric"].startswith(ROWS)] == [
        r["metric"] for r in rows
    ]
    for prefix in ROWS:
        (row,) = [r for r in rows if r["metric"].startswith(prefix)]
        # each row was measured: the gateway and the floor both have a figure
        assert row["gateway"] is not None, row
        assert row["floor"] is not None, row
        assert any(line.startswith(f"| {row['metric']} |") for line in table_lines(report))
    # the ten goals of the issue each have their row (whether they hold is not asserted;
    # in a one-second run a CPU delta of a few clock ticks may leave a ratio undefined)
    goals = [r["metric"] for r in rows if r["goal"] and not r["goal"].startswith("vs ")]
    assert len(goals) == 10, goals
    assert f"### Raw figures: streams ({loop})" in report
    assert "Noise indicators" in report


def test_python_fallbacks_run_without_wrk_or_nginx(tmp_path: Path) -> None:
    report, doc = run_bench(
        tmp_path,
        "--loadgen",
        "python",
        "--upstream",
        "python",
        "--only",
        "nonstream,stream",
        timeout=45,
    )
    meta = doc["meta"]
    assert meta["errors"] == {}
    assert meta["loadgen"] == "python"
    assert meta["nonstream_upstream"] == "python"
    (loop,) = meta["loops"]
    rows = {r["metric"]: r for r in doc["tables"][loop]}
    throughput = rows["non-stream throughput at c4 (ollama, round-robin)"]
    assert throughput["direct"] and throughput["floor"] and throughput["gateway"]
    assert rows["stream: streams complete, 4 concurrent"]["gateway"] == 8
    assert "load generator: Python" in report
