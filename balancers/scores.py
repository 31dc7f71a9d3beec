"""How outcomes update a target's latency EWMA and decayed usage.

Kept apart from the algorithms: `Balancer.report()` updates these for every route, and
algorithms only read them (`latency_score`, `usage_now`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import TargetState
    from .outcome import Outcome

EWMA_TAU = 10.0  # seconds: alpha = max(0.1, 1 - exp(-dt / tau))
MIN_ALPHA = 0.1
USAGE_HALF_LIFE = 60.0  # seconds
_DECAY_PER_SECOND = math.log(2) / USAGE_HALF_LIFE


def alpha(dt: float) -> float:
    """Weight of a new sample `dt` seconds after the previous one.

    A target sampled rarely (dt large) forgets its old value quickly, one sampled on every
    request still moves by at least 10 % per sample.
    """
    return max(MIN_ALPHA, 1.0 - math.exp(-dt / EWMA_TAU))


def add_latency(state: TargetState, outcome: Outcome, strategy: str, now: float) -> None:
    """Feed one successful attempt into the EWMA; failed attempts never come here."""
    if strategy == "tpot":
        if outcome.completion_tokens <= 0:
            return  # no tokens, no time-per-token: skip rather than invent a number
        x = outcome.latency / outcome.completion_tokens
    else:
        x = outcome.latency
    if state.samples == 0:
        state.ewma = x  # the first sample sets it (also replaces a failure penalty)
    else:
        state.ewma += alpha(now - state.ewma_at) * (x - state.ewma)
    state.ewma_at = now
    state.samples += 1


def penalize_latency(state: TargetState) -> None:
    """A counted failure: the target looks slower, never faster.

    A failure has no meaningful latency (a refused connection is "fast"), so it is not a
    sample; doubling keeps a failing target from winning on a stale good score, and an
    unsampled one gets +inf so it is no longer explored first on every request (it is
    still probed; its first success sets the EWMA).
    """
    state.ewma = state.ewma * 2.0 if state.samples else math.inf


def latency_score(state: TargetState) -> float:
    return state.ewma / state.weight


def unexplored(state: TargetState) -> bool:
    return state.samples == 0 and state.ewma == 0.0


def request_usage(outcome: Outcome, strategy: str) -> float:
    if strategy == "total-tokens":
        return outcome.prompt_tokens + outcome.completion_tokens
    if strategy == "prompt-tokens":
        return outcome.prompt_tokens
    if strategy == "completion-tokens":
        return outcome.completion_tokens
    return outcome.cost


def usage_now(state: TargetState, now: float) -> float:
    """Usage decayed to `now` (halves every 60 s)."""
    if state.usage == 0.0:
        return 0.0
    return state.usage * math.exp(-(now - state.usage_at) * _DECAY_PER_SECOND)


def add_usage(state: TargetState, outcome: Outcome, strategy: str, now: float) -> None:
    """Tokens (or cost) a target served count whether or not the attempt succeeded."""
    amount = request_usage(outcome, strategy)
    if amount:
        state.usage = usage_now(state, now) + amount
        state.usage_at = now
