"""Passive circuit breaker (Kong 3.13 semantics).

closed → `max_fails` counted failures within a sliding window of `fail_timeout` → open
(skipped) for `fail_timeout` → half-open: the next pick claims the single trial
(`claim`), and others skip the target until that trial is reported:
not a failure → closed with an empty count; a failure → open again. What counts as a
failure is `Outcome.counts` (transport failures and `upstream_fault` statuses, whether
or not the route fails over on them).

Choices: a success while closed does not clear the window (failures age out of it, so
one lucky request between errors does not hide a flapping target). Reports that arrive
while open come from attempts started before it opened and are ignored. While half-open,
the first report decides, whichever request it comes from.

`on_change`, when set, is called on each transition (to open, half_open or closed) and
never per report: whoever watches (the gateway logs them) costs nothing while the state
stays as it is, and this package does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .options import BalancerOptions

if TYPE_CHECKING:
    from .base import TargetState

# (state, the new breaker state: open | half_open | closed, failures that opened it)
Transition = Callable[["TargetState", str, int], None]


class Breaker:
    def __init__(self, options: BalancerOptions, wall: Callable[[], float]) -> None:
        self.max_fails = options.max_fails
        self.window = options.fail_timeout
        self.trial_timeout = options.trial_timeout
        self.wall = wall
        self.on_change: Transition | None = None

    def record(self, s: TargetState, failed: bool, now: float) -> None:
        if self.max_fails <= 0:
            return
        if s.breaker == "closed":
            if failed:
                self._count(s, now)
        elif now < s.open_until:
            return  # open: a late report from before it opened
        elif failed:
            self._open(s, now, 1)  # the half-open trial failed
        else:
            self._close(s)

    def claim(self, s: TargetState, now: float) -> None:
        """The pick took a half-open target: it is the one trial; others skip it."""
        before, s.breaker = s.breaker, "half_open"
        s.trial_until = now + self.trial_timeout
        if before == "open" and self.on_change is not None:
            self.on_change(s, "half_open", 0)

    def release(self, s: TargetState) -> None:
        """The trial's pick was never used: half-open again, unclaimed."""
        if s.breaker == "half_open":
            s.breaker = "open"
            s.trial_until = 0.0

    def _count(self, s: TargetState, now: float) -> None:
        times = s.fail_times
        times.append(now)
        # Only the last max_fails failures can decide; older ones or out of window go.
        while len(times) > self.max_fails or now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.max_fails:
            self._open(s, now, len(times))

    def _open(self, s: TargetState, now: float, failures: int) -> None:
        s.breaker = "open"
        s.opens += 1
        s.open_until = now + self.window
        s.trial_until = 0.0
        s.fail_times.clear()
        s.last_change = self.wall()
        if self.on_change is not None:
            self.on_change(s, "open", failures)

    def _close(self, s: TargetState) -> None:
        s.breaker = "closed"
        s.trial_until = 0.0
        s.fail_times.clear()
        s.last_change = self.wall()
        if self.on_change is not None:
            self.on_change(s, "closed", 0)
