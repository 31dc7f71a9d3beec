"""Active health checks: which targets answer a cheap GET, by Kong's counting rules.

`checker` keeps each prober's counters and verdict, schedules probes and writes
`TargetState.healthy`; `probe` makes one probe over the gateway's HTTP/1.1 client and
says what came of it; `targets` decides which URL, headers and policy each configured
target gets.
"""

from .checker import HealthChecker, HealthPolicy, ProberSnapshot
from .probe import ProbeSpec, public_url
from .targets import build_health_checker, probe_path, probe_spec

__all__ = [
    "HealthChecker",
    "HealthPolicy",
    "ProbeSpec",
    "ProberSnapshot",
    "build_health_checker",
    "probe_path",
    "probe_spec",
    "public_url",
]
