"""consistent-hashing: a ring of `slots` points shared by weight.

Built once per route: each target gets points in proportion to its weight (at least
one), placed by a stable hash of "<target name>#<i>" (never Python's salted `hash()`,
so every process and restart agrees). A request key is hashed the same way; its target
is the owner of the first point clockwise that is eligible. A target that is
unavailable or already tried therefore gives its keys to the next points' owners and
no other key moves. No key → smooth weighted round-robin.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b

from .base import Balancer, PickContext, TargetState
from .round_robin import SmoothWeighted


def stable_hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


def point_counts(weights: Sequence[int], slots: int) -> list[int]:
    """Split `slots` points by weight (largest remainder), each target at least one.

    The total is exactly `slots` unless there are more targets than slots (then one each).
    """
    total = sum(weights)
    quotas = [slots * w / total for w in weights]
    counts = [max(1, int(q)) for q in quotas]
    left = slots - sum(counts)
    if left > 0:  # hand out the rounding remainders, largest fraction first
        order = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
        for i in order[:left]:
            counts[i] += 1
    while left < 0:  # the "at least one" floor overshot: take from the richest
        i = max(range(len(counts)), key=lambda j: (counts[j], -j))
        if counts[i] <= 1:
            break
        counts[i] -= 1
        left += 1
    return counts


class ConsistentHashing(Balancer):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._smooth = SmoothWeighted(len(self.states))
        counts = point_counts([s.weight for s in self.states], self.options.slots)
        ring = sorted(
            (stable_hash(f"{s.name}#{i}"), s.index)
            for s, n in zip(self.states, counts, strict=True)
            for i in range(n)
        )
        self.points = [p for p, _ in ring]
        self.owners = [self.states[i] for _, i in ring]

    def choose(self, eligible: list[TargetState], ctx: PickContext) -> TargetState:
        if ctx.hash_key is None:
            return self._smooth.choose(eligible)
        return self.lookup(ctx.hash_key, eligible) or self._smooth.choose(eligible)

    def lookup(self, key: str, eligible: Sequence[TargetState]) -> TargetState | None:
        """Owner of the first point clockwise from the key's hash that is in `eligible`."""
        points, owners = self.points, self.owners
        n = len(points)
        pos = bisect_right(points, stable_hash(key))
        for k in range(n):
            owner = owners[(pos + k) % n]
            # Identity scan of a handful of targets: cheaper than building a set.
            for s in eligible:
                if s is owner:
                    return owner
        return None  # eligible holds targets of another route: not ours to place
