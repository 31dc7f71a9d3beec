"""Runtime form of the config: everything a request needs, computed once at startup.

The hot path only does dict lookups and attribute reads on these objects; no YAML
dicts, no URL parsing, no string building that could be done in advance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiDict
from yarl import URL

from balancers import Balancer, BalancerOptions, TargetState, make_balancer
from balancers.base import Clock

from . import errors
from .adapters import get_adapter
from .adapters.base import Adapter
from .config import RouteConfig, TargetConfig
from .http1 import Origin, Timeouts
from .upstream import timeouts

# Never forwarded to an upstream (SPEC §3.5): hop-by-hop headers, Host and
# Content-Length (recomputed), Accept-Encoding (we ask for identity).
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
        "expect",
        # The body is re-serialised plain JSON: whatever coding or digest the client's
        # body had does not describe ours.
        "content-encoding",
        "content-md5",
        "digest",
        "content-digest",
        "repr-digest",
    }
)


@dataclass(eq=False, slots=True)
class Target:
    cfg: TargetConfig
    state: TargetState
    adapter: Adapter
    url: URL
    origin: Origin
    drop_headers: frozenset[bytes]  # lower-cased client header names we do not forward
    model_header: str | None  # X-Kong-LLM-Model value when the model name is fixed
    # Request bytes computed once: `POST <path> HTTP/1.1` + Host, and the fields we
    # always add (Content-Type, Accept-Encoding, a forced auth header).
    request_line: bytes = b""
    host_field: bytes = b""
    fixed_fields: bytes = b""
    auth_field: bytes | None = None  # an allow_override auth header, sent when absent

    @property
    def name(self) -> str:
        return self.cfg.name

    def request_bytes(
        self, request: web.BaseRequest, body: bytes, drop: frozenset[bytes] | None = None
    ) -> bytes:
        """The whole upstream request: client headers (repeated ones kept) minus the
        ones we must not forward (SPEC §3.5), our fields, then the body."""
        if drop is None:
            drop = self.drop_headers
        if request.query_string or self.cfg.auth.param_location == "query":
            line = _request_line(self.upstream_url(request.query))
        else:
            line = self.request_line
        parts = [line, self.host_field]
        named: set[bytes] = set()
        for name, value in request.raw_headers:
            low = name.lower()
            if low in drop or low.startswith(b"proxy-"):
                if low == b"connection":
                    # Hop-by-hop fields the client named in Connection, over all its
                    # field lines (RFC 9110 §7.6.1).
                    named.update(t.strip().lower() for t in value.split(b","))
                continue
            # aiohttp's request parser already refused CR, LF and NUL in fields.
            parts.append(name + b": " + value + b"\r\n")
        named -= drop
        named.discard(b"close")
        if named:  # rare: build again without them
            return self.request_bytes(request, body, drop | named)
        parts.append(self.fixed_fields)
        if self.auth_field is not None and self.cfg.auth.header_name not in request.headers:
            parts.append(self.auth_field)
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
        return b"".join(parts)

    def upstream_url(self, client_query: Any) -> URL:
        auth = self.cfg.auth
        query_auth = auth.param_location == "query"
        if not client_query and not query_auth:
            return self.url
        # The operator's query first, then the client's (a client key replaces the
        # operator's; repeated client keys are all kept).
        query: MultiDict[str] = MultiDict(
            (k, v) for k, v in self.url.query.items() if k not in client_query
        )
        query.extend(client_query)
        if query_auth and (not auth.allow_override or auth.param_name not in client_query):
            query[auth.param_name] = auth.param_value  # type: ignore[index]
        return self.url.with_query(query)

    def inject_body_auth(self, upstream_body: dict[str, Any], client_body: dict[str, Any]) -> None:
        auth = self.cfg.auth
        if auth.param_location != "body":
            return
        name = auth.param_name
        if auth.allow_override and name in client_body:
            upstream_body[name] = client_body[name]  # type: ignore[index]
        else:
            upstream_body[name] = auth.param_value  # type: ignore[index]


def _request_line(url: URL) -> bytes:
    return b"POST " + url.raw_path_qs.encode("ascii") + b" HTTP/1.1\r\n"


def _field(name: str, value: str) -> bytes:
    # Values were checked at load (no CR/LF); UTF-8 like aiohttp sent them before.
    return name.encode("ascii") + b": " + value.encode("utf-8") + b"\r\n"


def _make_target(cfg: TargetConfig, index: int) -> Target:
    drop = {name.encode() for name in _NOT_FORWARDED}
    auth = cfg.auth
    fixed = _field("Content-Type", "application/json") + _field("Accept-Encoding", "identity")
    auth_field = None
    if auth.header_name is not None:
        line = _field(auth.header_name, auth.header_value)  # type: ignore[arg-type]
        if auth.allow_override:
            auth_field = line
        else:
            drop.add(auth.header_name.lower().encode())
            fixed += line
    url = URL(cfg.options.upstream_url.url)
    origin = Origin(url.scheme, url.raw_host or "", url.port or 80)
    return Target(
        cfg=cfg,
        state=TargetState(index=index, name=cfg.name, weight=cfg.weight),
        adapter=get_adapter(cfg.options.llama2_format),
        url=url,
        origin=origin,
        drop_headers=frozenset(drop),
        model_header=f"llama2/{cfg.model.name}" if cfg.model.name else None,
        request_line=_request_line(url),
        host_field=origin.host_field(),
        fixed_fields=fixed,
        auth_field=auth_field,
    )


@dataclass(eq=False, slots=True)
class Route:
    cfg: RouteConfig
    targets: list[Target]
    balancer: Balancer
    timeout: Timeouts
    secrets: tuple[str, ...]
    # Model-based candidate sets (SPEC §3.3), as balancer states.
    by_alias: dict[str, list[TargetState]] = field(default_factory=dict)
    by_name: dict[str, list[TargetState]] = field(default_factory=dict)
    unnamed: list[TargetState] = field(default_factory=list)
    default: list[TargetState] = field(default_factory=list)
    own_model_error: str = ""
    default_needs_client_model: bool = False

    @property
    def name(self) -> str:
        return self.cfg.name

    def candidates(self, model: Any) -> list[TargetState]:
        """Targets allowed for the client's `model` value; raises GatewayError(400)."""
        if model is None or model == "":
            if self.default_needs_client_model:
                raise errors.GatewayError(400, errors.NO_MODEL)
            return self.default
        if isinstance(model, str) and model.isprintable():
            found = self.by_alias.get(model) or self.by_name.get(model) or self.unnamed
        else:
            # A non-string model (or one with control characters, which could not go
            # into the X-Kong-LLM-Model header) matches no name and is not sent upstream.
            found = []
        if not found:
            raise errors.GatewayError(400, self.own_model_error or errors.NO_MODEL)
        return found


def _balancer_options(cfg: RouteConfig) -> BalancerOptions:
    b = cfg.balancer
    return BalancerOptions(
        latency_strategy=b.latency_strategy,
        tokens_count_strategy=b.tokens_count_strategy,
        slots=b.slots,
        max_fails=b.max_fails,
        fail_timeout=b.fail_timeout / 1000,  # Kong's milliseconds
    )


def build_route(cfg: RouteConfig, clock: Clock) -> Route:
    targets = [_make_target(t, i) for i, t in enumerate(cfg.targets)]
    states = [t.state for t in targets]
    route = Route(
        cfg=cfg,
        targets=targets,
        balancer=make_balancer(cfg.balancer.algorithm, states, clock, _balancer_options(cfg)),
        timeout=timeouts(cfg.balancer),
        secrets=cfg.secrets(),
    )
    names: set[str] = set()
    for t in targets:
        m = t.cfg.model
        if m.model_alias:
            route.by_alias.setdefault(m.model_alias, []).append(t.state)
            names.add(m.model_alias)
        if m.name:
            route.by_name.setdefault(m.name, []).append(t.state)
            names.add(m.name)
        else:
            route.unnamed.append(t.state)
    named = [t.state for t in targets if t.cfg.model.name]
    route.default = named or states
    route.default_needs_client_model = not named
    if names:
        route.own_model_error = errors.own_model(sorted(names))
    return route


class Router:
    """Path → Route: exact paths by dict, `~regex` paths in config order."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.exact: dict[str, Route] = {}
        self.patterns: list[tuple[re.Pattern[str], Route]] = []
        for r in routes:
            for p in r.cfg.paths:
                if p.startswith("~"):
                    self.patterns.append((re.compile(p[1:]), r))
                else:
                    self.exact[p] = r

    def match(self, path: str) -> Route | None:
        route = self.exact.get(path)
        if route is None:
            for pattern, r in self.patterns:
                if pattern.match(path):
                    return r
        return route
