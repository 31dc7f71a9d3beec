"""Validation of the `frontends:` block (model-addressed front doors)."""

from __future__ import annotations

from typing import Any

from ._checks import Checker
from .schema import CHAT, COMPLETIONS, EMBEDDINGS, FrontendsConfig, RouteConfig

# The endpoints each front door serves, under its prefix; a route path equal to one of
# them would be unreachable (front doors are matched first), so that is an error.
OPENAI_PATHS = ("/chat/completions", "/completions", "/embeddings", "/models")
OLLAMA_PATHS = (
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/version",
)
ROUTE_TYPE_NAMES = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}


class FrontendChecks(Checker):
    def frontends(self, raw: Any, routes: list[RouteConfig]) -> FrontendsConfig:
        d = self.mapping(raw, "frontends", {"openai", "ollama"}, {})
        openai = self.prefix(d, "openai")
        ollama = self.prefix(d, "ollama")
        cfg = FrontendsConfig(openai=openai, ollama=ollama)
        if cfg.enabled:
            self.front_paths(cfg, routes)
            self.model_claims(routes)
        return cfg

    def prefix(self, d: dict[str, Any], key: str) -> str | None:
        path = f"frontends.{key}"
        if key not in d:
            return None
        value = d[key]
        if value is None or value is False:
            return None  # written out as off
        if value is True:
            value = {}
        sub = self.mapping(value, path, {"prefix"}, {})
        default = "/v1" if key == "openai" else ""
        prefix = self.string(sub, "prefix", path, default)
        if not isinstance(prefix, str) or not self.clean(prefix, f"{path}.prefix"):
            return None
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            self.err(f"{path}.prefix", "must be empty or start with '/' and not end with '/'")
            return None
        if any(c in prefix for c in " ?#%") or not prefix.isprintable():
            self.err(f"{path}.prefix", "must be a plain path (no spaces, '?', '#', '%')")
            return None
        return prefix

    def front_paths(self, cfg: FrontendsConfig, routes: list[RouteConfig]) -> None:
        taken: dict[str, str] = {}
        if cfg.openai is not None:
            taken.update({cfg.openai + p: "openai" for p in OPENAI_PATHS})
        if cfg.ollama is not None:
            for p in OLLAMA_PATHS:
                path = cfg.ollama + p
                if path in taken:
                    self.err(
                        "frontends",
                        f"both front doors serve {path!r}; give one of them another prefix",
                    )
                taken.setdefault(path, "ollama")
        models = cfg.openai + "/models/" if cfg.openai is not None else None
        for i, r in enumerate(routes):
            for p in r.paths:
                door = taken.get(p)
                if door is None and models is not None and p.startswith(models):
                    door = "openai"  # {prefix}/models/{id} answers every path below it
                if door is not None:
                    self.err(
                        f"routes[{i}].paths",
                        f"path {p!r} is served by the {door} front door "
                        f"(frontends.{door}); pick another path or another prefix",
                    )

    def model_claims(self, routes: list[RouteConfig]) -> None:
        """A front door finds a route by (route type, model): two routes that both name
        a model for one route type would make that ambiguous."""
        owner: dict[tuple[str, str], str] = {}
        for i, r in enumerate(routes):
            names = {n for t in r.targets for n in (t.model.name, t.model.model_alias) if n}
            for name in sorted(names):
                key = (r.route_type, name)
                if key in owner and owner[key] != r.name:
                    kind = ROUTE_TYPE_NAMES.get(r.route_type, r.route_type)
                    self.err(
                        f"routes[{i}]",
                        f"model {name!r} ({kind}) is already served by route "
                        f"{owner[key]!r}; a front door could not tell which one to use",
                    )
                owner.setdefault(key, r.name)
