"""One client request, end to end.

intake → candidates (model rules) → attempt loop: pick → adapter.build → upstream
call → classify → retry/failover or answer → observers. This module is the only place
that knows the order of these steps (docs/design.md, "One request"); one attempt is
run by `attempt.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from balancers import Outcome, PickContext, TargetState

from . import errors, observe, requestid
from .adapters.base import Call, TransformError
from .admission import Admission, QueueRejected, priority_of
from .attempt import Attempt, Attempts
from .dialect import OPENAI, Dialect
from .errors import GatewayError
from .failure import retry_after, retryable
from .http1 import Pool
from .intake import check_shape, make_call, parse_body, read_body
from .jsonutil import dumps
from .logs import event
from .observe import Observer, RequestRecord
from .replies import gateway_headers
from .routing import Route, Target
from .security.clientip import Network, request_client
from .security.guard import RouteGuard
from .security.keyauth import Rejected, without_params
from .security.ratelimit import Admitted, RateLimited

log = logging.getLogger("llama_gateway")


@dataclass(slots=True)
class Prepared:
    """A request a front door has already read, parsed and put in OpenAI's shape."""

    raw: bytes  # the client's bytes (size limit, access log)
    body: dict[str, Any]  # OpenAI-shaped request body
    dialect: Dialect  # how the answer is shaped
    native_options: dict[str, Any] | None = None  # see adapters.base.Call
    native_fields: dict[str, Any] | None = None
    # The client's body as sent, when `body` is a translation of it (key_in_body).
    client_body: dict[str, Any] | None = None


class Gateway(Attempts):
    """Request handling shared by all routes; the server maps paths to `Route`s."""

    def __init__(
        self,
        pool: Pool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        observers: Sequence[Observer] = (),
        trusted: Sequence[Network] = (),
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.wall = wall
        self.observers = tuple(observers)
        self.trusted = tuple(trusted)  # server.trusted_proxies: whose X-Forwarded-For counts
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
        rec = RequestRecord(
            route=route,
            started=self.clock(),
            wall_started=self.wall(),
            request_id=requestid.assign(request),
        )
        if route.logs:
            rec.client_ip = request_client(request, self.trusted)
        dialect = OPENAI if prepared is None else prepared.dialect
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.in_flight += 1
        guard = route.guard
        try:
            if guard is not None and not guard.reads_body:
                rec.admitted = await _check(guard, request, rec)
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
            event(log, "request.internal_error", f"internal error on route {route.name}",
                  level=logging.ERROR, exc_info=True, route=route.name,
                  request_id=rec.request_id)  # fmt: skip
            rec.status, rec.outcome, rec.error = 500, observe.GATEWAY_ERROR, errors.INTERNAL
            return dialect.error(500, errors.INTERNAL)
        finally:
            self.tasks.discard(task)
            self.in_flight -= 1
            rec.duration = self.clock() - rec.started
            if not rec.outcome:
                rec.outcome = observe.outcome_of(rec)
            admitted = rec.admitted
            if admitted is not None and rec.usage is not None:
                assert guard is not None and guard.limiter is not None
                guard.limiter.spend(admitted.identity, rec.usage.total_tokens)
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
        guard = route.guard
        if guard is not None and guard.reads_body:  # key_in_body: the key may be in it
            sent = prepared.client_body if prepared is not None else None
            rec.admitted = await _check(guard, request, rec, body if sent is None else sent)
            if rec.hide is not None:  # hide_credentials: not sent upstream in any dialect
                for field in rec.hide.fields:
                    body.pop(field, None)
        model = body.get("model")
        rec.request_model = model if isinstance(model, str) and model.isprintable() else None
        candidates, preferred = route.candidates(model)
        call = make_call(cfg, body, int(rec.wall_started))
        if prepared is not None:
            call.native_options, call.native_fields = (
                prepared.native_options,
                prepared.native_fields,
            )
        rec.stream = call.stream
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
        priority = priority_of(request.headers, bal_cfg.queue) if admission is not None else 0
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
        query = request.query
        hidden: frozenset[bytes] = frozenset()
        hide = rec.hide
        if hide is not None:  # hide_credentials (body fields went when they were read)
            if any(name in query for name in hide.query):
                query = without_params(query, hide.query)
            hidden = hide.headers
        return target.request.build(
            request.raw_headers,
            query,
            dumps(upstream_body),
            request_id=requestid.field(rec.request_id),
            hidden=hidden,
        )

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


async def _check(
    guard: RouteGuard, request: web.Request, rec: RequestRecord, body: dict[str, Any] | None = None
) -> Admitted | None:
    """Key-auth, then rate limits; both noted in the record (the metrics' and access
    log's view: who, and why refused). `body`: when key_in_body, the parsed body."""
    try:
        cred = guard.authenticate(request, body)
    except Rejected as exc:
        rec.auth_rejected = exc.reason
        raise
    if cred is not None:
        rec.consumer = cred.consumer.username
        rec.secrets = (*rec.secrets, cred.key)
        key_auth = guard.key_auth
        if key_auth is not None and key_auth.cfg.hide_credentials:
            rec.hide, copies = key_auth.hiding(cred, request.headers, request.query, body)
            # Every copy kept back (another consumer's key too) is also never echoed.
            rec.secrets = (*rec.secrets, *(v for v in copies if v != cred.key))
    try:
        admitted = await guard.admit(request, cred)
    except RateLimited as exc:
        rec.rate_limited = exc.kind
        raise
    if admitted is not None and admitted.headers:
        rec.extra_headers = admitted.headers
    return admitted
