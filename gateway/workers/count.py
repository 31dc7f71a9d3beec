"""How many worker processes: a number, or `auto` = the CPUs this process may really use."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..config.schema import MAX_WORKERS


def parse_workers(text: str) -> int | str:
    """argparse type of `--workers`: an integer from 1, or `auto`."""
    value = text.strip().lower()
    if value == "auto":
        return value
    if value.isdigit() and 1 <= int(value) <= MAX_WORKERS:
        return int(value)
    raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_WORKERS}, or auto")


def worker_count(value: int | str, cgroup_root: str = "/sys/fs/cgroup") -> int:
    return available_cpus(cgroup_root) if value == "auto" else int(value)


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets, Kubernetes'
    static CPU manager), capped by a cgroup CPU quota rounded up (a container limited to
    1.5 CPUs still sees every core of the node in its mask; more workers than the quota
    only get throttled)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, min(cpus, MAX_WORKERS))


def cgroup_cpu_limit(root: Path, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup or its ancestors, cgroup
    v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when unlimited
    or unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            for d in _upwards(root, path):
                limits.extend(_v2_limit(d / "cpu.max"))
        elif "cpu" in controllers.split(","):
            mount = root / controllers
            if not mount.is_dir():
                mount = root / "cpu"
            for d in _upwards(mount, path):
                limits.extend(_v1_limit(d))
    return min(limits) if limits else None


def _upwards(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and each ancestor up to the mount. Inside a container the
    path may not exist in its view (its own cgroup is the mount's root): those are
    skipped by the readers."""
    rel = [p for p in path.strip("/").split("/") if p]
    return [mount.joinpath(*rel[:i]) for i in range(len(rel), -1, -1)]


def _v2_limit(path: Path) -> list[float]:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    if quota == "max":
        return []
    try:
        return [int(quota) / int(period)]
    except (ValueError, ZeroDivisionError):
        return []


def _v1_limit(d: Path) -> list[float]:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []
