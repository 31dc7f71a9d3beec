"""Structured access log: one JSON line per request, opt-in per target (Kong's
`logging.log_statistics` / `log_payloads`), with Kong's `ai.proxy.meta/usage/payload`.

Auth values never appear: headers are not logged at all, a body auth parameter is
removed from the logged request, and every configured auth value and the client's own
credential are redacted from both payloads and the error text (`redact.py`: an
upstream's error page may echo the request it got).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .jsonutil import JSONDecodeError, dumps, loads
from .observe import RequestRecord
from .replies import MAX_MODEL_ECHO

if TYPE_CHECKING:
    from .redact import Redactor
    from .routing import Target

ACCESS_LOGGER = "llama_gateway.access"


def configure(stream: TextIO | None = None) -> None:
    """Access lines go to stdout as bare JSON (not through the root log format)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(h, "_llama_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._llama_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class AccessLog:
    def __init__(self) -> None:
        self.log = logging.getLogger(ACCESS_LOGGER)

    def finished(self, rec: RequestRecord) -> None:
        target = rec.target
        if target is None:
            # Refused before any target was chosen (a key, a rate limit, a bad body,
            # none healthy): logged when the route logs at all, so a 401 or 429 is
            # never invisible to the operator who turned the log on.
            if not rec.route.logs:
                return
        elif not target.cfg.logging.log_statistics:
            return
        self.log.info("%s", self.line(rec).decode())

    @staticmethod
    def line(rec: RequestRecord) -> bytes:
        """The JSON line of a finished request (`target` null when none was tried;
        such a line has no payloads)."""
        target = rec.target
        u = rec.usage
        completion = u.completion_tokens if u else 0
        gen = rec.duration - (rec.ttft or 0.0) if rec.stream else rec.duration
        usage: dict[str, Any] = {
            "prompt_tokens": u.prompt_tokens if u else 0,
            "completion_tokens": completion,
            "total_tokens": u.total_tokens if u else 0,
            "cost": rec.cost,
            "time_per_token": round(gen * 1000 / completion, 3) if completion else None,
            "time_to_first_token": round(rec.ttft * 1000, 3) if rec.ttft is not None else None,
            "estimated": bool(u and u.estimated),
        }
        proxy: dict[str, Any] = {
            "meta": {
                "provider_name": "llama2",
                "request_model": _bounded(rec.request_model),
                "response_model": _bounded(rec.response_model),
                "llm_latency": round((rec.upstream_latency or 0.0) * 1000, 3),
                "request_mode": "stream" if rec.stream else "oneshot",
                "route_type": rec.route.cfg.route_type,
            },
            "usage": usage,
        }
        payloads = target is not None and target.cfg.logging.log_payloads
        redactor = rec.route.redactor
        if rec.secrets and (payloads or rec.error):
            redactor = redactor.with_extra(rec.secrets)
        if payloads:
            assert target is not None
            proxy["payload"] = {
                "request": _redacted(rec.request_body, target, redactor),
                "response": redactor.text((rec.response_body or b"").decode("utf-8", "replace")),
            }
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec.wall_started))
            + f".{int(rec.wall_started % 1 * 1000):03d}Z",
            "request_id": rec.request_id,
            "client_ip": rec.client_ip,  # the peer, or X-Forwarded-For's via trusted_proxies
            "route": rec.route.name,
            "consumer": rec.consumer,  # key-auth's username (a config value), else null
            "status": rec.status,
            "outcome": rec.outcome,
            # Why the gateway turned it away, when it did: key-auth (missing, invalid,
            # duplicate, forbidden), a rate limit (requests, tokens, store) or the
            # admission queue (full, timeout).
            "refused": rec.auth_rejected or rec.rate_limited or rec.queue_rejected,
            "target": target.name if target is not None else None,
            "attempts": rec.attempts,
            "tried_targets": _tried(rec),
            "failed": [{"target": f.target.name, "reason": f.reason.value} for f in rec.failures],
            "latency_ms": round(rec.duration * 1000, 3),
            "ai": {"proxy": proxy},
        }
        if rec.error:  # ours, or an upstream's in-band error text
            entry["error"] = redactor.text(rec.error)
        return dumps(entry)


def _bounded(model: str | None) -> str | None:
    """A client's `model` as logged: cut at MAX_MODEL_ECHO characters (a request may
    name a model of any length; the log line need not carry all of it)."""
    if model is None or len(model) <= MAX_MODEL_ECHO:
        return model
    return model[:MAX_MODEL_ECHO] + "…"


def _tried(rec: RequestRecord) -> list[str]:
    """Every target tried, in order: the failed attempts, then the answering one if its
    attempt did not fail (a failed last attempt is already among the failures)."""
    names = [f.target.name for f in rec.failures]
    if len(rec.failures) < rec.attempts and rec.target is not None:
        names.append(rec.target.name)
    return names


def _redacted(body: bytes | None, target: Target, redactor: Redactor) -> str:
    if not body:
        return ""
    auth = target.cfg.auth
    if auth.param_location == "body" and auth.param_name:
        try:
            doc = loads(body)
        except JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and auth.param_name in doc:
            doc[auth.param_name] = "[redacted]"
            body = dumps(doc)
    # Any of the route's keys, wherever a client pasted it, in any form.
    return redactor.text(body.decode("utf-8", "replace"))
