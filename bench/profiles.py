"""Function-level summaries of collapsed stacks (bench/sampler.py or py-spy `--format raw`)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"^.*?/(?:site|dist)-packages/")
_STDLIB = re.compile(r"^.*/lib/python3\.\d+/")


def _short(frame: str, root: str) -> str:
    """`func (path:line)` -> `func (short/path)`: no line, paths relative to the project,
    site-packages or the stdlib."""
    frame = _LINE.sub(")", frame)
    name, sep, path = frame.partition(" (")
    if not sep:
        return frame
    path = path.removeprefix(root + "/")
    path = _SITE.sub("", path)
    path = _STDLIB.sub("", path)
    return f"{name} ({path}"


def _area(frame: str) -> str:
    """The package a frame belongs to: `aiohttp`, `gateway`, `asyncio`, … or, for a
    top-level stdlib module, its file (`uuid.py`)."""
    path = frame.partition(" (")[2].rstrip(")")
    if not path:
        return frame
    return path.split("/", 1)[0]


def summarize_collapsed(path: Path, root: Path, top: int = 30) -> dict[str, Any]:
    """Self and inclusive shares (% of sampled busy time) per function and per package."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    area_c: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f, str(root)) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        area_c[_area(frames[-1])] += n
        for f in set(frames):
            incl_c[f] += n

    def share(c: Counter[str], k: int) -> list[list[Any]]:
        return [[f, round(100 * n / total, 1)] for f, n in c.most_common(k)] if total else []

    project = Counter({f: n for f, n in incl_c.items() if " (gateway/" in f or " (balancers/" in f})
    return {
        "samples": total,
        "self_by_package_all": share(area_c, 100),
        "self_all": share(self_c, 10_000),
        "self": share(self_c, top),
        "inclusive_project": share(project, top),
        "inclusive_all": share(incl_c, top),
        "self_by_package": share(area_c, 15),
    }
