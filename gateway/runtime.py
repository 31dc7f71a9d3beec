"""One config made runnable: its routes, the path table, the front doors, the probes.

The server holds exactly one `Runtime` and reads it once per request, so a reload is
one attribute assignment: requests that already hold the old runtime's `Route` finish
on it. `carry_routes` builds the new routes so that what did not change keeps its live
state (docs/design.md, "Reload"):

- a route whose config is unchanged is the same `Route` object (balancer position,
  admission queue, everything);
- a changed route gets a new balancer, but each target whose config *and position* are
  unchanged keeps its `TargetState` — in-flight count, health verdict, breaker,
  latency and usage, discovered models and slots. The state object is shared with the
  old route, so capacity is counted once across requests on either;
- a target that moved within its route gets a new state seeded with the old one's
  verdicts (health, breaker, latency, usage, discovery), but not its in-flight count:
  the old route's requests release into the old state. The balancers index their own
  tables by position, which is why a shared state must keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from balancers import TargetState

from .config import Config, RouteConfig
from .discovery import build_discovery
from .frontends import Catalog, OllamaFront, OpenAIFront, sibling_lists
from .health import build_health_checker
from .routing import DISCOVERY_INTERVAL, Route, Router, build_route

if TYPE_CHECKING:
    from .discovery import Discovery
    from .health import HealthChecker
    from .pipeline import Gateway
    from .replies import Handler

# Verdicts a moved target carries into its new state (never the in-flight count).
_CARRIED = (
    "requests",
    "failures",
    "healthy",
    "ewma",
    "ewma_at",
    "samples",
    "usage",
    "usage_at",
    "breaker",
    "open_until",
    "opens",
    "last_change",
    "capacity",
    "busy_reported",
    "deferred_reported",
    "signals_at",
    "models_installed",
    "models_loaded",
)


@dataclass(slots=True)
class Carried:
    """What a reload kept, made anew and let go (names as `route` or `route/target`)."""

    routes_kept: list[str] = field(default_factory=list)
    routes_changed: list[str] = field(default_factory=list)
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    targets_kept: list[str] = field(default_factory=list)
    targets_moved: list[str] = field(default_factory=list)
    targets_new: list[str] = field(default_factory=list)
    targets_removed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # changed keys kept out

    def summary(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def carry_routes(
    configs: Sequence[RouteConfig], clock: Callable[[], float], previous: Sequence[Route] = ()
) -> tuple[list[Route], Carried]:
    old_routes = {r.name: r for r in previous}
    out: list[Route] = []
    c = Carried()
    for cfg in configs:
        old = old_routes.pop(cfg.name, None)
        if old is None:
            out.append(build_route(cfg, clock))
            c.routes_added.append(cfg.name)
            continue
        if old.cfg == cfg:
            out.append(old)
            c.routes_kept.append(cfg.name)
            continue
        states: dict[int, TargetState] = {}
        by_name = {t.name: (i, t) for i, t in enumerate(old.targets)}
        for i, t_cfg in enumerate(cfg.targets):
            label = f"{cfg.name}/{t_cfg.name}"
            prev = by_name.pop(t_cfg.name, None)
            if prev is None or prev[1].cfg != t_cfg:
                c.targets_new.append(label)
                if prev is not None:
                    c.targets_removed.append(label)  # same name, new config: drains
                continue
            j, t = prev
            if i == j:
                states[i] = t.state
                c.targets_kept.append(label)
            else:
                states[i] = _seeded(t.state, i)
                c.targets_moved.append(label)
        c.targets_removed.extend(f"{cfg.name}/{n}" for n in by_name)
        out.append(build_route(cfg, clock, states))
        c.routes_changed.append(cfg.name)
    c.routes_removed.extend(old_routes)
    return out, c


def _seeded(old: TargetState, index: int) -> TargetState:
    new = TargetState(index=index, name=old.name, weight=old.weight)
    for name in _CARRIED:
        setattr(new, name, getattr(old, name))
    new.fail_times.extend(old.fail_times)
    if new.breaker == "half_open":
        new.breaker = "open"  # the trial in flight belongs to the old state: offer another
    return new


class Runtime:
    """Everything a request reads that comes from the config."""

    def __init__(
        self,
        config: Config,
        routes: list[Route],
        *,
        gateway: Callable[[], Gateway],
        created: float,
        rejection: Callable[[str], Callable[[str], None]],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.router = Router(routes)
        self.catalog = Catalog(routes)
        self.created = created
        # GET …/models next to each Kong-style route path ending in /chat/completions
        # or /completions (an OpenAI SDK with that route's base URL lists models there).
        self.model_lists = sibling_lists(routes, set(self.router.exact))
        # Front-door paths by exact match; `{openai prefix}/models/<id>` by prefix.
        self.doors: dict[str, Handler] = {}
        self.model_path: str | None = None
        self.get_model: Handler | None = None
        limits = [r.cfg.max_request_body_size for r in routes]
        # Each route checks its own limit; a front door reads up to the largest.
        body_limit = 0 if not limits or 0 in limits else max(limits)
        f = config.frontends
        if f.openai is not None:
            openai = OpenAIFront(f.openai, self.catalog, gateway, body_limit, int(created))
            openai.rejected = rejection(openai.name)
            self.doors.update(openai.paths())
            self.model_path, self.get_model = openai.model_path, openai.get_model
        if f.ollama is not None:
            root = f.ollama + "/"
            free = root not in self.router.exact and root not in self.model_lists
            ollama = OllamaFront(f.ollama, self.catalog, gateway, body_limit, created, free)
            ollama.rejected = rejection(ollama.name)
            self.doors.update(ollama.paths())
        self.health: HealthChecker | None = build_health_checker(routes)
        self.discovery: Discovery | None = build_discovery(
            routes, interval=DISCOVERY_INTERVAL, clock=clock
        )

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    async def start_probes(self) -> None:
        if self.health is not None:
            # First probes run now: a dead target is found before clients hit it.
            await self.health.start()
        if self.discovery is not None:
            await self.discovery.start()

    async def stop_probes(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.discovery is not None:
            await self.discovery.stop()
