"""The gateway's lifecycle and breaker events: one function per event name, so each
name's fields are fixed in one place (the list is in docs/operations.md, "Log events").
Health, discovery, reload and worker events are logged where they happen
(`health/checker.py`, `discovery/events.py`, `reload.py`, `workers/`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from balancers import TargetState

from . import __version__
from .logs import event

log = logging.getLogger("llama_gateway")
circuit_log = logging.getLogger("llama_gateway.circuit")


def started(
    host: str,
    port: int,
    status_host: str,
    status_port: int,
    routes: int,
    targets: int,
    **extra: Any,
) -> None:
    """Both listeners are up. `extra`: more fields (e.g. `workers`), or other values."""
    listen, status = f"http://{host}:{port}", f"http://{status_host}:{status_port}"
    fields: dict[str, Any] = {
        "listen": listen,
        "status_listen": status,
        "routes": routes,
        "targets": targets,
        "version": __version__,
        "pid": os.getpid(),
    }
    fields.update(extra)
    msg = f"llama-gateway listening on {listen} (status {status}), {routes} route(s)"
    event(log, "gateway.started", msg, **fields)


def listen_failed(error: str) -> None:
    event(log, "gateway.listen_failed", f"cannot listen: {error}", level=logging.ERROR, error=error)


def stopped() -> None:
    event(log, "gateway.stopped", "stopped")


def drain_started(in_flight: int, timeout: float) -> None:
    event(
        log,
        "drain.started",
        f"draining: {in_flight} request(s) in flight, up to {timeout:g}s",
        in_flight=in_flight,
        timeout=timeout,
    )


def drain_finished(in_flight: int, cut: int, seconds: float, forced: bool) -> None:
    """`in_flight` requests were in flight when the drain started; `cut` of them (and of
    any that came later on open connections) were ended when time ran out."""
    level = logging.WARNING if cut else logging.INFO
    event(
        log,
        "drain.finished",
        f"drain finished in {seconds:.2f}s: {cut} request(s) cut short",
        level=level,
        in_flight=in_flight,
        completed=max(0, in_flight - cut),
        cut=cut,
        seconds=round(seconds, 3),
        forced=forced,
    )


def circuit_hook(route: str, open_for: float) -> Callable[[TargetState, str, int], None]:
    """What a route's breaker calls on each transition (`Breaker.on_change`)."""

    def changed(state: TargetState, to: str, failures: int) -> None:
        target = state.name
        extra: dict[str, Any] = {}
        if to == "open":
            # failures: the counted failures that tripped it (1: a failed trial)
            msg = f"opened for {open_for:g}s after {failures} failure(s)"
            name, level = "circuit.opened", logging.WARNING
            extra["open_for"] = open_for
        elif to == "half_open":
            msg, name, level = "half-open: one trial request", "circuit.half_open", logging.INFO
        else:
            msg, name, level = "closed", "circuit.closed", logging.INFO
        event(
            circuit_log,
            name,
            f"circuit of target {target} (route {route}) {msg}",
            level=level,
            route=route,
            target=target,
            failures=failures,
            **extra,
        )

    return changed
