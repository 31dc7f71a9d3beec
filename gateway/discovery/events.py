"""Discovery's log events, one function each (names and fields: docs/operations.md,
"Log events"). Every one names the server as host:port, never with its query (which
may carry a key), and the targets on it."""

from __future__ import annotations

import logging
from typing import Any

from ..logs import event
from .server import Server

log = logging.getLogger("llama_gateway.discovery")


def _about(srv: Server) -> dict[str, Any]:
    return {"server": srv.where, "targets": [m.state.name for m in srv.members]}


def internal_error(srv: Server) -> None:
    """Our bug, not the server's (logged once per server, with the traceback)."""
    event(log, "discovery.internal_error", f"discovery: poll of {srv.where} failed unexpectedly",
          level=logging.WARNING, exc_info=True, **_about(srv))  # fmt: skip


def failing(srv: Server, error: str, keep_for: float) -> None:
    event(log, "discovery.failing",
          f"discovery: {srv.where}: {error}; keeping what it last said for up to {keep_for:.0f}s",
          level=logging.WARNING, error=error, keep_for=keep_for, **_about(srv))  # fmt: skip


def recovered(srv: Server) -> None:
    event(log, "discovery.recovered", f"discovery: {srv.where} answers again", **_about(srv))


def expired(srv: Server, values: list[str], after: float) -> None:
    event(log, "discovery.expired",
          f"discovery: {srv.where}: no fresh {', '.join(values)} for {after:.0f}s; now unknown",
          level=logging.WARNING, values=values, after=after, **_about(srv))  # fmt: skip


def endpoint_off(srv: Server, path: str, reason: str, retry_in: float) -> None:
    event(log, "discovery.endpoint_off",
          f"discovery: {srv.where} does not serve {path} ({reason}); asking again in "
          f"{retry_in:.0f}s",
          path=path, reason=reason, retry_in=retry_in, **_about(srv))  # fmt: skip


def endpoint_on(srv: Server, path: str) -> None:
    event(log, "discovery.endpoint_on", f"discovery: {srv.where} serves {path} again",
          path=path, **_about(srv))  # fmt: skip
