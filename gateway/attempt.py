"""One attempt of a request: send to the picked target, then answer, relay or classify.

`Attempts` is the half of `pipeline.Gateway` that runs one attempt and ends its
balancer pick with the outcome (`_report`: exactly once per pick, the balancer
contract). The attempt loop itself, which decides what to try next, is in
`pipeline.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from aiohttp import web
from orjson import JSONEncodeError

from balancers import Outcome, Reason, TargetState, upstream_fault

from . import errors, observe
from .adapters.base import Call, ResponseError
from .adapters.common import estimated_usage
from .dialect import JSON, Dialect
from .failure import Failure, classify, status_failure, unreadable
from .http1 import BodyTooLarge, Disconnected, Origin, Pool, Response, Timeouts, UpstreamError
from .jsondepth import TOO_DEEP_ANSWER, encoder_refused_depth
from .logs import event
from .observe import FailedAttempt, RequestRecord
from .redact import Redactor, credential
from .replies import gateway_headers, success_headers
from .routing import Route, Target
from .streaming import ADAPTER_BUGS, AdapterBug, StreamEnd, relay_stream

# The only upstream header values a client ever gets (with a non-200 passed through).
_PASSTHROUGH_HEADERS = ("Content-Type", "Retry-After")
# One of them with a byte aiohttp would refuse to write (a control character: the
# client would get no answer at all) or re-encode (non-ASCII): not a usable answer.
INVALID_HEADER = Failure("invalid_header", Reason.INVALID, "invalid upstream header value")
log = logging.getLogger("llama_gateway")


@dataclass(slots=True)
class Attempt:
    """The attempt loop's private state (what observers see is in the RequestRecord)."""

    rec: RequestRecord
    dialect: Dialect
    last_failure: Failure | None = None
    sent_at: float = 0.0
    headers_at: float = 0.0
    passthrough: web.Response | None = None  # last upstream non-200, answered if no retry
    passthrough_raw: bytes = b""  # its body as the upstream sent it, secrets redacted
    picked: TargetState | None = None  # the pick not yet reported (see `_report`)
    credential_noted: bool = False  # the client's Authorization was added to rec.secrets


class Attempts:
    """Runs single attempts; mixed into `pipeline.Gateway`, which owns these."""

    pool: Pool
    clock: Callable[[], float]
    closing: bool

    async def _try(
        self,
        request: web.Request,
        route: Route,
        target: Target,
        call: Call,
        data: bytes,
        att: Attempt,
    ) -> web.StreamResponse | Failure:
        """One attempt: send `data`, then answer, relay or classify the failure. Reports
        the pick with the attempt's outcome (see `_report`)."""
        att.sent_at = self.clock()
        if target.cfg.logging.log_payloads:
            _note_credential(request, att)  # the access log redacts it from both payloads
        resp: Response | None = None
        try:
            resp = await self._send(target.origin, data, route.timeout)
            att.headers_at = self.clock()
            if resp.status != 200:
                return await self._non_200(request, route, target, resp, att)
            if call.stream:
                return await self._stream(request, route, target, call, resp, att)
            body = await resp.read(route.cfg.max_response_body)
        except UpstreamError as exc:
            failure = classify(exc)
            if isinstance(exc, BodyTooLarge):
                event(log, "upstream.body_too_large",
                      f"target {target.name}: response body over max_response_body",
                      level=logging.WARNING, route=route.name, target=target.name,
                      request_id=att.rec.request_id)  # fmt: skip
            return self._failed(route, target, failure, att)
        except AdapterBug as exc:
            return self._adapter_bug(route, target, call, att, exc)
        finally:
            if resp is not None:
                resp.release()  # back to the pool if fully read, closed otherwise
        try:
            parsed = target.adapter.parse(call, target.cfg.options, body)
        except ResponseError as exc:
            # The reason may quote the upstream (`ollama error: …`), which may quote us.
            reason = _redactor(request, route, att).text(str(exc))
            text = errors.transformation_failed(call.route_type, reason)
            return self._failed(route, target, unreadable(text), att)
        except JSONEncodeError as exc:
            if not encoder_refused_depth(exc):
                return self._adapter_bug(route, target, call, att, exc)
            # The upstream's JSON nests deeper than orjson writes: its fault, not ours.
            text = errors.transformation_failed(call.route_type, TOO_DEEP_ANSWER)
            return self._failed(route, target, unreadable(text), att)
        except ADAPTER_BUGS as exc:
            return self._adapter_bug(route, target, call, att, exc)
        done = self.clock()
        u = parsed.usage
        rec = att.rec
        rec.answered_by_upstream = True
        rec.usage = u
        rec.ttft = done - rec.started
        rec.response_body = parsed.body
        self._timings(rec, att)
        self._report(
            route,
            att,
            Outcome(
                ok=True,
                latency=done - att.sent_at,
                ttft=done - att.sent_at,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cost=rec.cost,
            ),
        )
        return web.Response(
            body=att.dialect.answer(call, parsed, rec),
            content_type=JSON,
            headers=success_headers(route, target, call, att.rec, att.sent_at, att.headers_at),
        )

    async def _send(self, origin: Origin, data: bytes, timeouts: Timeouts) -> Response:
        # Redirects are never followed: a 3xx is the upstream's answer (passed through),
        # and following one would send our auth header to whatever host it names.
        try:
            return await self.pool.request(origin, data, timeouts)
        except Disconnected as exc:
            if not exc.stale:
                raise
            # Closed before any response byte on a pooled idle connection the upstream
            # had already dropped: not a target failure. Once more, on a fresh
            # connection, not counted as an attempt.
            return await self.pool.request(origin, data, timeouts, fresh=True)

    async def _non_200(
        self, request: web.Request, route: Route, target: Target, resp: Response, att: Attempt
    ) -> web.Response | Failure:
        """Upstream non-200: passed through (an error body in the client's dialect),
        unless failover applies (then the pass-through is kept in case no other target
        answers). Secrets an upstream echoes are redacted from the body first."""
        headers: dict[str, str] = {}
        for name in _PASSTHROUGH_HEADERS:
            value = resp.headers.get(name)
            if value is not None:
                if not _sendable(value):
                    return self._failed(route, target, INVALID_HEADER, att)
                headers[name] = value
        data = await resp.read(route.cfg.max_response_body)
        redactor = _redactor(request, route, att)
        if redactor:
            data = redactor.data(data)
        body = data
        if resp.status >= 400:
            body, reshaped = att.dialect.upstream_error(resp.status, data)
            if reshaped:
                headers["Content-Type"] = JSON
        headers.update(gateway_headers(target, att.rec.attempts))
        answer = web.Response(status=resp.status, body=body, headers=headers)
        failure = status_failure(resp.status)
        retry = failure.criterion in route.cfg.balancer.failover_criteria
        # Reported either way (the breaker ignores client-caused statuses); only an
        # upstream fault, or a status the route fails over on, is a failed attempt.
        self._timings(att.rec, att)
        if retry or upstream_fault(resp.status):
            self._failed(route, target, failure, att)
        else:
            self._report(route, att, failure.outcome())
        if retry:
            att.passthrough, att.passthrough_raw = answer, data
            return failure
        rec = att.rec
        rec.answered_by_upstream = True
        rec.response_body = data  # the upstream's own bytes, before any re-shaping
        return answer

    def _failed(self, route: Route, target: Target, failure: Failure, att: Attempt) -> Failure:
        outcome = failure.outcome()
        att.rec.failures.append(FailedAttempt(target, failure.reason, outcome.counts))
        self._report(route, att, outcome)
        return failure

    def _adapter_bug(
        self, route: Route, target: Target, call: Call, att: Attempt, exc: BaseException
    ) -> Failure:
        """An adapter raised what it never should: logged, answered as our error, and
        not held against the target (no verdict for the balancer, no retry)."""
        cause = exc.__cause__ if isinstance(exc, AdapterBug) else exc
        event(log, "adapter.failed",
              f"adapter {target.adapter.format} failed on target {target.name} of route "
              f"{route.name}",
              level=logging.ERROR, exc_info=cause, route=route.name, target=target.name,
              format=target.adapter.format, request_id=att.rec.request_id)  # fmt: skip
        self._report(route, att, Outcome(ok=False))
        att.rec.outcome = observe.GATEWAY_ERROR
        text = errors.transformation_failed(call.route_type, "unexpected response shape")
        return Failure("gateway", Reason.INVALID, text, status=200)

    @staticmethod
    def _report(route: Route, att: Attempt, outcome: Outcome) -> None:
        """End the attempt's pick with its outcome, once: the balancer contract."""
        state, att.picked = att.picked, None
        if state is not None:
            route.balancer.report(state, outcome)

    def _timings(self, rec: RequestRecord, att: Attempt) -> None:
        rec.proxy_latency = att.sent_at - rec.started
        rec.upstream_latency = att.headers_at - att.sent_at

    # ------------------------------------------------------------------ streaming

    async def _stream(
        self,
        request: web.Request,
        route: Route,
        target: Target,
        call: Call,
        resp: Response,
        att: Attempt,
    ) -> web.StreamResponse | Failure:
        inner = target.adapter.decoder(call, target.cfg.options)
        # Built only if the upstream ends its stream with an error text (rare).
        inner.redact = lambda text: _redactor(request, route, att).text(text)
        decoder = att.dialect.stream(call, inner, att.rec, self.clock)
        end = await relay_stream(
            request,
            resp,
            decoder,
            success_headers(route, target, call, att.rec, att.sent_at, att.headers_at),
            lambda: self.closing,
            self.clock,
            target.name,
        )
        if isinstance(end, Failure):  # nothing committed: the attempt loop decides
            if end.status == 200:  # an unreadable first frame, named as a 200 body is
                end = replace(end, detail=errors.transformation_failed(call.route_type, end.detail))
            return self._failed(route, target, end, att)
        self._stream_done(route, target, call, att, end)
        task = asyncio.current_task()
        if end.cancelled and task is not None and task.cancelling():
            # The relay stopped on our cancellation (the client left): keep it going.
            raise asyncio.CancelledError
        return end.response

    def _stream_done(
        self, route: Route, target: Target, call: Call, att: Attempt, end: StreamEnd
    ) -> None:
        rec = att.rec
        done = self.clock()
        # A cancelled or broken stream has no final frame: count the tokens seen so far.
        u = end.usage or estimated_usage(call, end.text_len)
        rec.answered_by_upstream = True
        rec.usage = u
        rec.ttft = end.first_event_at - rec.started
        rec.error = end.error
        self._timings(rec, att)
        if end.cancelled or end.shutdown:
            # Ended by the client, or by our own shutdown: nothing to hold against the
            # target (no verdict), but the tokens it served still count as its usage.
            rec.outcome = observe.CANCELLED
            verdict_ok = False
        elif end.failure is not None:
            rec.failures.append(FailedAttempt(target, end.failure, True))
            verdict_ok = False
        elif end.error is not None:
            rec.outcome = observe.GATEWAY_ERROR  # our decoder failed mid-stream: no verdict
            verdict_ok = False
        else:
            verdict_ok = True
        self._report(
            route,
            att,
            Outcome(
                ok=verdict_ok,
                latency=done - att.sent_at,
                ttft=end.first_event_at - att.sent_at,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cost=rec.cost,
                failure=end.failure if not (end.cancelled or end.shutdown) else None,
            ),
        )


def _sendable(value: str) -> bool:
    """Printable ASCII (tab too, as RFC 9110 field values allow): what aiohttp writes
    as it is. The parser already refuses control characters; this keeps that promise
    where the values are copied, whatever parses them."""
    return value.isascii() and (value.isprintable() or value.replace("\t", " ").isprintable())


def _note_credential(request: web.Request, att: Attempt) -> None:
    """Add the client's own Authorization credential to the request's secrets, once
    (never sent upstream unless the target allows it, but an echo may show it)."""
    if not att.credential_noted:
        att.credential_noted = True
        value = request.headers.get("Authorization")
        secret = credential(value) if value else ""
        if secret:
            att.rec.secrets = (*att.rec.secrets, secret)


def _redactor(request: web.Request, route: Route, att: Attempt) -> Redactor:
    """The route's redactor with this request's client credentials."""
    _note_credential(request, att)
    secrets = att.rec.secrets
    return route.redactor.with_extra(secrets) if secrets else route.redactor
