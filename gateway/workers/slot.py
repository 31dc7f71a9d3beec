"""One worker position of the pod: its state, its restart backoff, its watchdog."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field

from ..logs import event
from .client import get

log = logging.getLogger("llama_gateway.workers")

STARTING, READY_STATE, BACKOFF, DRAINING = "starting", "ready", "backoff", "draining"
STATES = (STARTING, READY_STATE, BACKOFF, DRAINING)
REASONS = ("exited", "signal", "unresponsive")  # why a worker was restarted


@dataclass(slots=True)
class Timing:
    """The supervisor's clock settings (tests shorten them)."""

    stable_after: float = 30.0  # a worker that ran this long is restarted at once
    backoff_first: float = 0.5  # then 0.5, 1, 2, … seconds for quick repeated deaths
    backoff_max: float = 30.0
    drain_margin: float = 10.0  # beyond drain_timeout: a worker's own cut-off and cleanup
    watch_interval: float = 5.0  # private /healthz of each ready worker
    watch_timeout: float = 3.0
    watch_failures: int = 4  # in a row, then the worker is killed (and restarted)


@dataclass(slots=True)
class Slot:
    """One worker position; a restarted worker takes its slot's place."""

    index: int
    status_path: str
    state: str = STARTING
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0  # monotonic, this incarnation
    started_wall: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    killed_unresponsive: bool = False
    reload_pending: bool = False  # SIGHUP came while it was starting
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def death_reason(self, code: int | None) -> str:
        """Why it is restarted: one of REASONS."""
        if self.killed_unresponsive:
            return "unresponsive"
        return "signal" if code is not None and code < 0 else "exited"

    def backoff(self, t: Timing) -> float:
        """Seconds to wait before the next start: none after a stable run, then
        doubling for each quick death in a row (a worker that cannot start must not
        spin)."""
        if time.monotonic() - self.started >= t.stable_after:
            self.quick_deaths = 0
        self.quick_deaths += 1
        if self.quick_deaths == 1:
            return 0.0
        return float(min(t.backoff_max, t.backoff_first * 2 ** (self.quick_deaths - 2)))

    def log_death(self, code: int | None, then: str, level: int, reason: str = "exited") -> None:
        if code is None:
            how = "could not start"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        event(
            log,
            "worker.exited",
            f"worker {self.index} (pid {self.pid}) {how}; {then}",
            level=level,
            worker=self.index,
            pid=self.pid,
            code=code,
            reason=reason,
        )


async def watch(
    slot: Slot, proc: asyncio.subprocess.Process, t: Timing, stop: asyncio.Event
) -> None:
    """Kill a ready worker whose event loop stopped answering (a stuck worker would
    keep its share of new connections forever); its slot then restarts it."""
    await slot.ready.wait()
    misses = 0
    while proc.returncode is None and not stop.is_set():
        await asyncio.sleep(t.watch_interval)
        try:
            status, _ = await get(slot.status_path, "/healthz", t.watch_timeout)
            ok = status == 200
        except (OSError, TimeoutError):
            ok = False
        misses = 0 if ok else misses + 1
        if misses >= t.watch_failures and proc.returncode is None and not stop.is_set():
            event(
                log,
                "worker.unresponsive",
                f"worker {slot.index} (pid {proc.pid}) missed {misses} health checks: killing it",
                level=logging.ERROR,
                worker=slot.index,
                pid=proc.pid,
            )
            slot.killed_unresponsive = True
            proc.kill()
            return
