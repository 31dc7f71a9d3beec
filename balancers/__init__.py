"""Target selection for one route: state per target, selection algorithms, outcomes.

Knows targets (name, weight) and request outcomes, never HTTP: `gateway` imports this
package, not the other way round.
"""

from .base import Balancer, PickContext, TargetState
from .breaker import Breaker
from .options import BalancerOptions
from .outcome import Outcome, Reason, upstream_fault
from .registry import implemented, make_balancer

__all__ = [
    "Balancer",
    "BalancerOptions",
    "Breaker",
    "Outcome",
    "PickContext",
    "Reason",
    "TargetState",
    "implemented",
    "make_balancer",
    "upstream_fault",
]
