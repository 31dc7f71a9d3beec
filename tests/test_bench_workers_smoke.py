"""Smoke test of the 1-vs-2-workers benchmark (`bench/workers.py --quick`): every
arrangement runs end to end and lands in the report. Timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_quick_workers_run_reports_every_arrangement(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workers.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    (result,) = tmp_path.glob("workers-*/results.json")
    doc = json.loads(result.read_text())
    names = [r["arrangement"] for r in doc["closed"]]
    assert names == ["1w isolated", "2w on 1 core", "1w shared", "2w shared", "2w shared-socket"]
    assert [r["arrangement"] for r in doc["paced"]] == ["1w shared", "2w shared"]
    for row in doc["closed"] + doc["paced"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["non2xx"] == 0, row
        assert row["processes"] == row["workers"] + (1 if row["workers"] > 1 else 0), row
    two = next(r for r in doc["closed"] if r["arrangement"] == "2w shared")
    assert sum(two["worker_split"]) == two["requests"], "every request was counted by a worker"
    assert "| 2w shared |" in proc.stdout
