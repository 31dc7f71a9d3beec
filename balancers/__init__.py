"""Target selection for one route: state per target, selection algorithms, outcomes.

Knows targets (name, weight) and request outcomes, never HTTP: `gateway` imports this
package, not the other way round.
"""

from .base import Balancer, Outcome, PickContext, TargetState
from .registry import make_balancer

__all__ = ["Balancer", "Outcome", "PickContext", "TargetState", "make_balancer"]
