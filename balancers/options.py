"""Per-route balancer settings, in balancer units (seconds, not Kong's milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_STRATEGIES = ("tpot", "e2e")
TOKENS_COUNT_STRATEGIES = ("total-tokens", "prompt-tokens", "completion-tokens", "cost")


@dataclass(frozen=True, slots=True)
class BalancerOptions:
    latency_strategy: str = "tpot"  # lowest-latency sample: tpot | e2e
    tokens_count_strategy: str = "total-tokens"  # lowest-usage: what one request costs
    slots: int = 10000  # consistent-hashing ring points, in total
    max_fails: int = 0  # breaker threshold; 0 = breaker off
    fail_timeout: float = 10.0  # seconds: breaker window and open time
    probe_share: float = 0.05  # lowest-latency: share of picks that refresh other scores
    # Safety net only: a half-open trial that is neither reported nor released (a bug
    # in the caller) stops blocking the target after this many seconds.
    trial_timeout: float = 300.0
    # Seconds a server-reported load figure counts (3 discovery intervals).
    signal_max_age: float = 15.0

    def __post_init__(self) -> None:
        if self.latency_strategy not in LATENCY_STRATEGIES:
            raise ValueError(f"latency_strategy {self.latency_strategy!r}")
        if self.tokens_count_strategy not in TOKENS_COUNT_STRATEGIES:
            raise ValueError(f"tokens_count_strategy {self.tokens_count_strategy!r}")
        if self.slots < 1 or self.max_fails < 0 or self.fail_timeout <= 0:
            raise ValueError("slots >= 1, max_fails >= 0 and fail_timeout > 0 are required")
        if not 0.0 <= self.probe_share < 1.0 or self.trial_timeout <= 0:
            raise ValueError("probe_share in [0, 1) and trial_timeout > 0 are required")
