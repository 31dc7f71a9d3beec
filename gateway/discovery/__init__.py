"""Discovery: what each upstream server says about itself (models installed and loaded,
busy slots, queued requests, slot count), polled once per server and written to the
targets' `TargetState`s.

`poller` runs the polls and writes; `server` holds one server's readings and the
states they go to; `parse` reads each answer; `signals` holds the pure
rules for reading the written fields back (staleness, model filtering), free of gateway
imports so that the balancers can take them over.
"""

from .poller import (
    INTERVAL,
    STALE_AFTER,
    Discovery,
    ServerSnapshot,
    build_discovery,
    kind_of,
    server_spec,
)
from .signals import ModelChoice, display_names, fresh_busy, fresh_deferred, model_choice

__all__ = [
    "INTERVAL",
    "STALE_AFTER",
    "Discovery",
    "ModelChoice",
    "ServerSnapshot",
    "build_discovery",
    "display_names",
    "fresh_busy",
    "fresh_deferred",
    "kind_of",
    "model_choice",
    "server_spec",
]
