"""One client request, end to end.

intake → candidates (model rules) → attempt loop: pick → adapter.build → upstream
call → classify → retry/failover or answer → observers. This module is the only place
that knows the order of these steps (docs/design.md, "One request").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from balancers import Outcome, PickContext, Reason, TargetState, upstream_fault

from . import errors, observe
from .adapters.base import Call, ResponseError, TransformError
from .adapters.common import estimated_usage
from .admission import Admission, QueueRejected
from .config.schema import PRIORITY_RANGE, QueueConfig
from .dialect import JSON, OPENAI, Dialect
from .errors import GatewayError
from .failure import Failure, classify, retry_after, retryable, status_failure, unreadable
from .http1 import BodyTooLarge, Disconnected, Origin, Pool, Response, Timeouts, UpstreamError
from .intake import check_shape, make_call, parse_body, read_body
from .jsonutil import dumps
from .observe import FailedAttempt, Observer, RequestRecord
from .replies import gateway_headers, success_headers
from .routing import Route, Target
from .streaming import AdapterBug, StreamEnd, relay_stream

_PASSTHROUGH_HEADERS = ("Content-Type", "Retry-After")
# Exceptions an adapter's parse() must never raise: our bug, not the upstream's.
_ADAPTER_BUGS = (ValueError, TypeError, KeyError, AttributeError, IndexError)
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
    passthrough_raw: bytes = b""  # its body as the upstream sent it (for the access log)
    picked: TargetState | None = None  # the pick not yet reported (see `_report`)


@dataclass(slots=True)
class Prepared:
    """A request a front door has already read, parsed and put in OpenAI's shape."""

    raw: bytes  # the client's bytes (size limit, access log)
    body: dict[str, Any]  # OpenAI-shaped request body
    dialect: Dialect  # how the answer is shaped
    native_options: dict[str, Any] | None = None  # see adapters.base.Call
    native_fields: dict[str, Any] | None = None


class Gateway:
    """Request handling shared by all routes; the server maps paths to `Route`s."""

    def __init__(
        self,
        pool: Pool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.wall = wall
        self.observers = tuple(observers)
        self.in_flight = 0
        self.tasks: set[asyncio.Task[Any]] = set()  # handler tasks in flight (for drain)
        # Set when drain time ran out: committed streams end with an error event, the
        # rest get 503 `gateway is shutting down`.
        self.closing = False

    # ------------------------------------------------------------------ request intake

    async def handle(
        self, request: web.Request, route: Route, prepared: Prepared | None = None
    ) -> web.StreamResponse:
        """Answer `request` on `route`: read from the request itself (a route path), or
        `prepared` by a front door."""
        rec = RequestRecord(route=route, started=self.clock(), wall_started=self.wall())
        dialect = OPENAI if prepared is None else prepared.dialect
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.in_flight += 1
        try:
            resp = await self._handle(request, route, rec, dialect, prepared)
            rec.status = resp.status
            return resp
        except GatewayError as exc:
            rec.status, rec.error = exc.status, exc.message
            return dialect.error(exc.status, exc.message, exc.headers)
        except asyncio.CancelledError:
            rec.outcome = observe.CANCELLED
            if not self.closing or rec.status:
                raise
            # Our own shutdown ran out of drain time before anything was sent: a clear
            # answer instead of a dropped connection.
            task.uncancel()
            rec.status, rec.error = 503, errors.SHUTDOWN
            return dialect.error(503, errors.SHUTDOWN)
        except Exception:
            # A bug must not turn into aiohttp's text/plain 500 (or a leaked traceback).
            log.exception("internal error on route %s", route.name)
            rec.status, rec.outcome, rec.error = 500, observe.GATEWAY_ERROR, errors.INTERNAL
            return dialect.error(500, errors.INTERNAL)
        finally:
            self.tasks.discard(task)
            self.in_flight -= 1
            rec.duration = self.clock() - rec.started
            if not rec.outcome:
                rec.outcome = observe.outcome_of(rec)
            for obs in self.observers:
                obs.finished(rec)

    async def _handle(
        self,
        request: web.Request,
        route: Route,
        rec: RequestRecord,
        dialect: Dialect,
        prepared: Prepared | None,
    ) -> web.StreamResponse:
        cfg = route.cfg
        limit = cfg.max_request_body_size
        if prepared is None:
            raw = rec.request_body = await read_body(request, limit)
            body = parse_body(raw, cfg.route_type)
        else:
            raw = rec.request_body = prepared.raw
            if limit and len(raw) > limit:  # the front door read up to the largest limit
                raise GatewayError(413, errors.BODY_TOO_LARGE)
            body = prepared.body
            check_shape(body, cfg.route_type)
        rec.body_size = len(raw)
        model = body.get("model")
        candidates, preferred = route.candidates(model)
        call = make_call(cfg, body, int(rec.wall_started))
        if prepared is not None:
            call.native_options, call.native_fields = (
                prepared.native_options,
                prepared.native_fields,
            )
        rec.stream = call.stream
        rec.request_model = model if isinstance(model, str) and model.isprintable() else None
        att = Attempt(rec, dialect)
        return await self._attempts(request, route, call, candidates, preferred, att)

    # ------------------------------------------------------------------ attempt loop

    async def _attempts(
        self,
        request: web.Request,
        route: Route,
        call: Call,
        candidates: list[TargetState],
        preferred: list[TargetState],
        att: Attempt,
    ) -> web.StreamResponse:
        rec = att.rec
        bal_cfg = route.cfg.balancer
        ctx = PickContext(hash_key=request.headers.get(bal_cfg.hash_on_header), preferred=preferred)
        untransformable: str | None = None
        admission = route.admission
        priority = _priority(request, bal_cfg.queue) if admission is not None else 0
        while True:
            if admission is None:
                state = route.balancer.pick(candidates, ctx)
            else:
                state = await self._admit(admission, candidates, ctx, priority, rec)
            if state is None:
                break
            target = route.targets[state.index]
            try:
                data = self._request_bytes(request, target, call, rec)
            except TransformError as exc:
                # This target's dialect cannot carry the request; another one may.
                route.balancer.release(state)
                untransformable = errors.transforming_to(
                    call.route_type, target.adapter.format, str(exc)
                )
                candidates = [s for s in candidates if s is not state]  # a copy: shared
                continue
            except BaseException:
                route.balancer.release(state)  # never sent
                raise
            att.picked = state
            rec.attempts += 1
            rec.target = target
            rec.response_model = call.model
            att.passthrough = None
            ctx.tried.append(state)
            try:
                result = await self._try(request, route, target, call, data, att)
            finally:
                # Every path of an attempt reports its pick once; one that ended
                # without (the client left, a bug) had no verdict. A no-op otherwise.
                self._report(route, att, Outcome(ok=False))
            if isinstance(result, web.StreamResponse):
                return result
            att.last_failure = result
            if rec.attempts > bal_cfg.retries or not retryable(result, bal_cfg.failover_criteria):
                break
        return self._give_up(route, att, candidates, untransformable)

    async def _admit(
        self,
        admission: Admission,
        candidates: list[TargetState],
        ctx: PickContext,
        priority: int,
        rec: RequestRecord,
    ) -> TargetState | None:
        """A pick through the route's capacity: may wait in its queue (the time waited
        is recorded) or be refused (429 / 503, recorded by reason)."""
        started = self.clock()
        try:
            state, waited = await admission.admit(candidates, ctx, priority)
        except QueueRejected as exc:
            rec.queue_rejected = exc.reason
            rec.queue_wait = (rec.queue_wait or 0.0) + self.clock() - started
            raise
        if waited is not None:
            rec.queue_wait = (rec.queue_wait or 0.0) + waited
        return state

    @staticmethod
    def _request_bytes(
        request: web.Request, target: Target, call: Call, rec: RequestRecord
    ) -> bytes:
        """The upstream request for `target`. Raises TransformError when its dialect
        cannot carry the request, GatewayError when no model name is known."""
        call.model = target.cfg.model.name or rec.request_model
        if call.model is None:
            raise GatewayError(400, errors.NO_MODEL)
        upstream_body = target.adapter.build(call, target.cfg.options)
        target.request.inject_body_auth(upstream_body, call.body)
        return target.request.build(request.raw_headers, request.query, dumps(upstream_body))

    def _give_up(
        self,
        route: Route,
        att: Attempt,
        candidates: list[TargetState],
        untransformable: str | None,
    ) -> web.Response:
        """No more attempts: the last failure is the answer."""
        rec = att.rec
        failure, target = att.last_failure, rec.target
        if failure is None or target is None:
            if untransformable is not None and not candidates:
                # No target can carry this request at all: the client's problem. (When
                # some could but are unavailable, that is a 503 like any other.)
                raise GatewayError(400, untransformable)
            headers = {"Retry-After": str(retry_after(candidates, self.clock()))}
            raise GatewayError(503, errors.no_healthy_targets(route.name), headers)
        if att.passthrough is not None:  # the last attempt's upstream answer
            rec.answered_by_upstream = True
            rec.response_body = att.passthrough_raw
            return att.passthrough
        if failure.is_timeout:
            message, status = errors.upstream_timed_out(target.name), 504
        elif failure.status == 200:  # an answer the adapter could not read
            message, status = failure.detail, 500
        else:
            message, status = errors.upstream_unavailable(target.name), 502
        rec.error = message
        return att.dialect.error(status, message, gateway_headers(target, att.rec.attempts))

    # ------------------------------------------------------------------ one attempt

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
        resp: Response | None = None
        try:
            resp = await self._send(target.origin, data, route.timeout)
            att.headers_at = self.clock()
            if resp.status != 200:
                return await self._non_200(route, target, resp, att)
            if call.stream:
                return await self._stream(request, route, target, call, resp, att)
            body = await resp.read(route.cfg.max_response_body)
        except UpstreamError as exc:
            failure = classify(exc)
            if isinstance(exc, BodyTooLarge):
                log.warning("target %s: response body over max_response_body", target.name)
            return self._failed(route, target, failure, att)
        except AdapterBug as exc:
            return self._adapter_bug(route, target, call, att, exc)
        finally:
            if resp is not None:
                resp.release()  # back to the pool if fully read, closed otherwise
        try:
            parsed = target.adapter.parse(call, target.cfg.options, body)
        except ResponseError as exc:
            text = errors.transformation_failed(call.route_type, str(exc))
            return self._failed(route, target, unreadable(text), att)
        except _ADAPTER_BUGS as exc:
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
        self, route: Route, target: Target, resp: Response, att: Attempt
    ) -> web.Response | Failure:
        """Upstream non-200: passed through (an error body in the client's dialect),
        unless failover applies (then the pass-through is kept in case no other target
        answers)."""
        data = await resp.read(route.cfg.max_response_body)
        headers = {k: resp.headers[k] for k in _PASSTHROUGH_HEADERS if k in resp.headers}
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
        log.error(
            "adapter %s failed on target %s of route %s",
            target.adapter.format,
            target.name,
            route.name,
            exc_info=cause,
        )
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
        decoder = att.dialect.stream(
            call, target.adapter.decoder(call, target.cfg.options), att.rec, self.clock
        )
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


def _priority(request: web.Request, queue: QueueConfig | None) -> int:
    """The request's queue priority (higher first); 400 when the header is not a small
    integer. 0 without the header or without a queue."""
    if queue is None:
        return 0
    raw = request.headers.get(queue.priority_header)
    if raw is None:
        return 0
    lo, hi = PRIORITY_RANGE
    try:
        value = int(raw.strip())
    except ValueError:
        value = hi + 1
    if not lo <= value <= hi:
        raise GatewayError(400, errors.bad_priority(queue.priority_header, lo, hi))
    return value
