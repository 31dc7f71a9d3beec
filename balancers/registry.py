"""Balancer construction by `balancer.algorithm` name."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Balancer, Clock, TargetState
from .round_robin import RoundRobin

_ALGORITHMS: dict[str, type[Balancer]] = {
    "round-robin": RoundRobin,
}


def implemented() -> frozenset[str]:
    return frozenset(_ALGORITHMS)


def make_balancer(algorithm: str, states: Sequence[TargetState], clock: Clock) -> Balancer:
    try:
        cls = _ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"balancer algorithm {algorithm!r} is not implemented") from None
    return cls(states, clock=clock)
