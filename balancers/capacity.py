"""How busy a target is, and whether it has a free slot: what the gateway has in flight
there and what the server itself reports (load from other clients included).

A server-reported figure counts only while fresh: discovery polls every few seconds, and
an old figure would keep a target "full" (or "free") long after it changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import TargetState


def reported_busy(s: TargetState, now: float, max_age: float) -> int | None:
    """Busy slots the server reported (other clients' work included); None when unknown
    or read more than `max_age` seconds before `now`: unknown is never zero."""
    reported = s.busy_reported
    if reported is None or now - s.signals_at > max_age:
        return None
    return reported


def reported_deferred(s: TargetState, now: float, max_age: float) -> int | None:
    """Requests waiting inside the server (llama.cpp's deferred), by the same rule."""
    deferred = s.deferred_reported
    if deferred is None or now - s.signals_at > max_age:
        return None
    return deferred


def busy(s: TargetState, now: float, max_age: float) -> int:
    """Requests the target is generating now, as far as we know: what we have in flight
    there, plus the load of other clients — the server's count when fresh, minus what
    was ours when it was read. (Taking the server's count as it is would keep a target
    "full" with requests of ours that ended since, until the next poll.)"""
    reported = reported_busy(s, now, max_age)
    if reported is None:
        return s.in_flight
    return s.in_flight + max(0, reported - s.own_at_signal)


def has_slot(s: TargetState, now: float, max_age: float) -> bool:
    """A target without a capacity always has room (today's unlimited behaviour)."""
    cap = s.capacity
    return cap is None or busy(s, now, max_age) < cap
