"""Runtime form of the config: everything a request needs, computed once at startup.

The hot path only does dict lookups and attribute reads on these objects; no YAML
dicts, no URL parsing, no string building that could be done in advance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yarl import URL

from balancers import Balancer, BalancerOptions, TargetState, make_balancer
from balancers.base import Clock

from . import errors
from .adapters import get_adapter
from .adapters.base import Adapter
from .admission import Admission
from .config import RouteConfig, TargetConfig
from .discovery import INTERVAL as DISCOVERY_INTERVAL
from .discovery import kind_of, model_choice
from .events import circuit_hook
from .failure import timeouts
from .http1 import Origin, Timeouts
from .outbound import RequestTemplate, origin_of
from .redact import Redactor

if TYPE_CHECKING:
    from .security.guard import RouteGuard


@dataclass(eq=False, slots=True)
class Target:
    cfg: TargetConfig
    state: TargetState
    adapter: Adapter
    origin: Origin
    request: RequestTemplate  # the upstream request's fixed parts
    model_header: str | None  # X-Kong-LLM-Model value when the model name is fixed

    @property
    def name(self) -> str:
        return self.cfg.name


def _make_target(cfg: TargetConfig, index: int, state: TargetState | None = None) -> Target:
    url = URL(cfg.options.upstream_url.url)
    origin = origin_of(url)
    if state is None:
        state = TargetState(
            index=index,
            name=cfg.name,
            weight=cfg.weight,
            # `auto` starts at one slot until discovery has read the server's count:
            # never more in flight than the server may take.
            capacity=1 if cfg.auto_concurrency else cfg.max_concurrency,
        )
    return Target(
        cfg=cfg,
        state=state,
        adapter=get_adapter(cfg.options.llama2_format, cfg.route_type),
        origin=origin,
        request=RequestTemplate(url, origin, cfg.auth),
        model_header=f"llama2/{cfg.model.name}" if cfg.model.name else None,
    )


@dataclass(eq=False, slots=True)
class Route:
    cfg: RouteConfig
    targets: list[Target]
    balancer: Balancer
    timeout: Timeouts
    secrets: tuple[str, ...]
    redactor: Redactor  # the targets' auth values out of echoed bodies (redact.py)
    admission: Admission | None = None  # when any target has a capacity
    # Model-based candidate sets, as balancer states.
    by_alias: dict[str, list[TargetState]] = field(default_factory=dict)
    by_name: dict[str, list[TargetState]] = field(default_factory=dict)
    unnamed: list[TargetState] = field(default_factory=list)
    default: list[TargetState] = field(default_factory=list)
    own_model_error: str = ""
    default_needs_client_model: bool = False
    # Some unnamed target's server lists its models (discovery): filter by them.
    discovered: bool = False
    # Key-auth and rate limits (gateway/security): set by the runtime that serves the
    # route, None when the route has neither.
    guard: RouteGuard | None = None
    # Some target writes access-log lines: so does a request refused before any target
    # was chosen (401, 429, a bad body, none healthy).
    logs: bool = False

    @property
    def name(self) -> str:
        return self.cfg.name

    def candidates(self, model: object) -> tuple[list[TargetState], list[TargetState]]:
        """Targets allowed for the client's `model` value, and those of them to prefer
        (the model already loaded there); raises GatewayError (400, or 404 for a model
        no discovered server has)."""
        if model is None or model == "":
            if self.default_needs_client_model:
                raise errors.GatewayError(400, errors.NO_MODEL)
            return self.default, []
        if isinstance(model, str) and model.isprintable():
            found = self.by_alias.get(model) or self.by_name.get(model) or self.unnamed
        else:
            # A non-string model (or one with control characters, which could not go
            # into the X-Kong-LLM-Model header) matches no name and is not sent upstream.
            found = []
        if not found:
            raise errors.GatewayError(400, self.own_model_error or errors.NO_MODEL)
        if found is self.unnamed and self.discovered and isinstance(model, str):
            # The client's model goes upstream as sent: only servers that have it (or
            # whose models are unknown), those with it already loaded first.
            choice = model_choice(found, model)
            if not choice.candidates:
                raise errors.GatewayError(404, choice.not_available(model))
            return choice.candidates, choice.loaded
        return found, []


def _balancer_options(cfg: RouteConfig) -> BalancerOptions:
    b = cfg.balancer
    return BalancerOptions(
        latency_strategy=b.latency_strategy,
        tokens_count_strategy=b.tokens_count_strategy,
        slots=b.slots,
        max_fails=b.max_fails,
        fail_timeout=b.fail_timeout / 1000,  # Kong's milliseconds
        signal_max_age=3 * DISCOVERY_INTERVAL,
    )


def build_route(
    cfg: RouteConfig, clock: Clock, kept: Mapping[int, TargetState] | None = None
) -> Route:
    """The runtime route; `kept` are live states a reload carries over, by position."""
    carried = kept or {}
    targets = [_make_target(t, i, carried.get(i)) for i, t in enumerate(cfg.targets)]
    states = [t.state for t in targets]
    secrets = cfg.secrets()
    route = Route(
        cfg=cfg,
        targets=targets,
        balancer=make_balancer(cfg.balancer.algorithm, states, clock, _balancer_options(cfg)),
        timeout=timeouts(cfg.balancer),
        secrets=secrets,
        redactor=Redactor(secrets),
    )
    # Breaker transitions become log events; nothing runs while the state holds.
    route.balancer.breaker.on_change = circuit_hook(cfg.name, route.balancer.options.fail_timeout)
    if route.balancer.limited:  # a target has a capacity (`auto` starts at 1)
        route.admission = Admission(cfg.name, route.balancer, cfg.balancer.queue, clock)
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
    route.logs = any(t.cfg.logging.log_statistics for t in targets)
    route.discovered = any(
        kind_of(t.cfg) in ("ollama", "openai") for t in targets if not t.cfg.model.name
    )
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
