"""Balancer construction by `balancer.algorithm` name."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from .base import Balancer, Clock, TargetState
from .consistent_hashing import ConsistentHashing
from .least_busy import LeastBusy
from .least_connections import LeastConnections
from .lowest_latency import LowestLatency
from .lowest_usage import LowestUsage
from .options import BalancerOptions
from .priority import Priority
from .round_robin import RoundRobin

_ALGORITHMS: dict[str, type[Balancer]] = {
    "round-robin": RoundRobin,
    "lowest-latency": LowestLatency,
    "lowest-usage": LowestUsage,
    "least-connections": LeastConnections,
    "consistent-hashing": ConsistentHashing,
    "priority": Priority,
    "least-busy": LeastBusy,
}


def implemented() -> frozenset[str]:
    return frozenset(_ALGORITHMS)


def make_balancer(
    algorithm: str,
    states: Sequence[TargetState],
    clock: Clock,
    options: BalancerOptions = BalancerOptions(),  # noqa: B008 (frozen, shared)
    rng: random.Random | None = None,
    wall: Clock = time.time,
) -> Balancer:
    """`clock`: monotonic seconds (scores, breaker); `wall`: epoch seconds (last_change)."""
    try:
        cls = _ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"balancer algorithm {algorithm!r} is not implemented") from None
    return cls(states, clock=clock, options=options, rng=rng, wall=wall)
