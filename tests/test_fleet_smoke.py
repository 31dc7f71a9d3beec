"""Smoke test of the fleet benchmark (`bench/fleet.py --quick`), so it cannot rot.

One configuration with capacity and the queue, at 85 % load for 4 s, as a subprocess
(gateway process, simulated llama.cpp boxes, open-loop client). Timings are never
asserted; what must hold whatever the machine does: every request served completely,
no box ever held more than its slots.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]


def test_quick_fleet_run_serves_everything_within_slots(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet.py"),
            *("--quick", "--only", "least-busy-cap", "--no-kill", "--no-plot"),
            *("--out", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    (run,) = results["runs"]
    assert run["capacity"] and run["scenario"] == "load" and not run["gateway_exited"]
    requests = run["requests"]
    assert requests and all(r["status"] == 200 and r["complete"] for r in requests)
    assert all(b["max_held"] <= b["slots"] for b in run["boxes"])
    assert "least-busy + cap" in (run_dir / "report.md").read_text()
