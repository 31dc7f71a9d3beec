"""YAML document → typed config; every error names its key path."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ._balancer import BalancerChecks
from ._checks import shown
from ._env import EnvChecks
from ._frontends import FrontendChecks
from ._load import check_shape, load_yaml, read_file
from ._security import SecurityChecks
from ._target import TargetChecks
from .schema import (
    MAX_RESPONSE_BODY,
    MAX_WORKERS,
    BalancerConfig,
    Config,
    ConfigError,
    RouteConfig,
    ServerConfig,
    TargetConfig,
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_file(path: str, env: Mapping[str, str] | None = None) -> Config:
    return load_text(read_file(path), env)


def load_text(text: str, env: Mapping[str, str] | None = None) -> Config:
    return parse(load_yaml(text), os.environ if env is None else env)


def parse(raw: Any, env: Mapping[str, str]) -> Config:
    check_shape(raw)  # first: nothing below need fear deep, cyclic or huge data
    v = _Validator(env)
    cfg = v.config(raw)
    if v.errors or cfg is None:
        raise ConfigError(v.errors or ["empty configuration"])
    return cfg


# Kong schema keys we accept only at their Kong default (value None means "absent/null").
_KONG_DEFAULTS_PLUGIN = {
    "llm_format": "openai",
    "genai_category": "text/generation",
    "embeddings": None,
    "vectordb": None,
}
_SINGLE_TARGET_KEYS = {
    "route_type",
    "model",
    "auth",
    "logging",
    "response_streaming",
    "max_request_body_size",
    "max_response_body",
    "model_name_header",
}


class _Validator(BalancerChecks, TargetChecks, FrontendChecks, EnvChecks, SecurityChecks):
    # ---- document --------------------------------------------------------------------

    def config(self, raw: Any) -> Config | None:
        if raw is None:
            self.err("", "empty configuration")
            return None
        top = self.mapping(raw, "", {"server", "routes", "frontends", "consumers"}, {})
        server = self.with_env(top.get("server"), self.server)  # LLAMA_GATEWAY_<KEY>
        routes_raw = top.get("routes")
        routes: list[RouteConfig] = []
        if not isinstance(routes_raw, list) or not routes_raw:
            self.err("routes", "must be a non-empty list")
        else:
            for i, r in enumerate(routes_raw):
                route = self.route(r, f"routes[{i}]")
                if route is not None:
                    routes.append(route)
        self.check_route_uniqueness(routes)
        frontends = self.frontends(top.get("frontends"), routes)
        consumers = self.consumers(top.get("consumers"))
        self.check_consumers(consumers, routes)
        return Config(server=server, routes=tuple(routes), frontends=frontends, consumers=consumers)

    def server(self, raw: Any) -> ServerConfig:
        d = self.mapping(
            raw,
            "server",
            {
                "host",
                "port",
                "status_host",
                "status_port",
                "drain_timeout",
                "workers",
                "client_header_timeout",
                "client_body_timeout",
                "client_body_min_rate",
                "keepalive_timeout",
                "max_connections",
                "trusted_proxies",
            },
            {},
        )
        s = ServerConfig()
        return ServerConfig(
            host=self.wire_string(d, "host", "server", s.host),
            port=self.number(d, "port", "server", s.port, integer=True, lo=0, hi=65535),
            status_host=self.wire_string(d, "status_host", "server", s.status_host),
            status_port=self.number(
                d, "status_port", "server", s.status_port, integer=True, lo=0, hi=65535
            ),
            drain_timeout=self.number(d, "drain_timeout", "server", s.drain_timeout, lo=0),
            workers=self.workers(d.get("workers")),
            client_header_timeout=self.number(
                d, "client_header_timeout", "server", s.client_header_timeout, lo=0
            ),
            client_body_timeout=self.number(
                d, "client_body_timeout", "server", s.client_body_timeout, lo=0
            ),
            client_body_min_rate=self.number(
                d, "client_body_min_rate", "server", s.client_body_min_rate, lo=0
            ),
            keepalive_timeout=self.number(
                d, "keepalive_timeout", "server", s.keepalive_timeout, lo=0
            ),
            max_connections=self.number(
                d, "max_connections", "server", s.max_connections, integer=True, lo=0
            ),
            trusted_proxies=self.networks(d.get("trusted_proxies"), "server.trusted_proxies"),
        )

    def networks(self, value: Any, path: str) -> tuple[str, ...]:
        """A list of IP addresses or CIDRs (a comma-separated string too: an
        environment variable is one), normalised (`10.0.0.0/8`, `127.0.0.1/32`)."""
        if value is None:
            return ()
        if isinstance(value, str):
            value = [v.strip() for v in self.interpolate(value, path).split(",") if v.strip()]
        if not isinstance(value, list):
            self.err(path, "must be a list of IP addresses or CIDRs")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            try:
                out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
            except ValueError:
                self.err(f"{path}[{i}]", f"not an IP address or CIDR: {shown(str(item))}")
        return tuple(out)

    def workers(self, value: Any) -> int | str:
        """`server.workers`: an integer from 1, or `auto`. Digit strings pass too: an
        environment variable (`${N}`, or a server key set from the environment) is one."""
        if value is None:
            return 1
        if isinstance(value, str):
            value = self.interpolate(value, "server.workers").strip()
            if value == "auto":
                return value
            if value.isascii() and value.isdigit() and len(value) <= 4:  # not '²'
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
            self.err("server.workers", f"must be an integer from 1 to {MAX_WORKERS}, or auto")
            return 1
        return value

    def check_route_uniqueness(self, routes: list[RouteConfig]) -> None:
        seen_names: set[str] = set()
        seen_paths: dict[str, str] = {}
        for i, r in enumerate(routes):
            if r.name in seen_names:
                self.err(f"routes[{i}].name", f"duplicate route name {r.name!r}")
            seen_names.add(r.name)
            for p in r.paths:
                if p in seen_paths:
                    self.err(
                        f"routes[{i}].paths", f"path {p!r} already used by route {seen_paths[p]!r}"
                    )
                seen_paths[p] = r.name

    def route(self, raw: Any, path: str) -> RouteConfig | None:
        d = self.mapping(
            raw, path, {"name", "paths", "plugin", "config", "key_auth", "rate_limiting"}, {}
        )
        if not d:
            if raw is not None and isinstance(raw, dict):
                self.err(path, "empty route")
            return None
        name = self.name(d, "name", path)
        paths = self.paths(d.get("paths"), f"{path}.paths")
        plugin = self.choice(
            d, "plugin", path, ("ai-proxy-advanced", "ai-proxy"), "ai-proxy-advanced"
        )
        cpath = f"{path}.config"
        craw = d.get("config")
        if not isinstance(craw, dict):
            self.err(cpath, "required mapping (the Kong plugin config)")
            return None
        if plugin == "ai-proxy":
            c = self.mapping(craw, cpath, _SINGLE_TARGET_KEYS, _KONG_DEFAULTS_PLUGIN)
            tfields = {k: c[k] for k in ("route_type", "model", "auth", "logging") if k in c}
            t = self.target(tfields, cpath)
            targets = [t] if t is not None else []
            balancer = BalancerConfig()
        else:
            c = self.mapping(
                craw,
                cpath,
                {
                    "targets",
                    "balancer",
                    "response_streaming",
                    "max_request_body_size",
                    "max_response_body",
                    "model_name_header",
                },
                _KONG_DEFAULTS_PLUGIN,
            )
            balancer = self.balancer(c.get("balancer"), f"{cpath}.balancer")
            traw = c.get("targets")
            targets = []
            if not isinstance(traw, list) or not traw:
                self.err(f"{cpath}.targets", "must be a non-empty list")
            else:
                for i, t_raw in enumerate(traw):
                    t = self.target(t_raw, f"{cpath}.targets[{i}]")
                    if t is not None:
                        targets.append(t)
        streaming = self.choice(
            c, "response_streaming", cpath, ("allow", "deny", "always"), "allow"
        )
        max_body = self.number(c, "max_request_body_size", cpath, 1048576, integer=True, lo=0)
        max_response = self.number(
            c, "max_response_body", cpath, MAX_RESPONSE_BODY, integer=True, lo=0
        )
        name_header = self.boolean(c, "model_name_header", cpath, True)
        key_auth = self.key_auth(d.get("key_auth"), path)
        rate_limiting = self.rate_limiting(d.get("rate_limiting"), path, key_auth)
        if not targets or name is None or paths is None:
            return None
        route_types = {t.route_type for t in targets}
        if len(route_types) > 1:
            self.err(f"{cpath}.targets", "all targets of a route must share one route_type")
            return None
        targets = self.name_targets(targets, f"{cpath}.targets")
        if balancer.healthchecks is None:
            for i, t in enumerate(targets):
                if t.auto_concurrency:
                    self.err(
                        f"{cpath}.targets[{i}].max_concurrency",
                        "auto needs active health checks (they read the server's slot "
                        "count); set a number, or turn healthchecks on",
                    )
        return RouteConfig(
            name=name,
            paths=paths,
            plugin=plugin,
            route_type=targets[0].route_type,
            targets=tuple(targets),
            balancer=balancer,
            response_streaming=streaming,
            max_request_body_size=max_body,
            max_response_body=max_response,
            model_name_header=name_header,
            key_auth=key_auth,
            rate_limiting=rate_limiting,
        )

    def paths(self, raw: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.err(path, "must be a non-empty list of paths")
            return None
        out: list[str] = []
        for i, p in enumerate(raw):
            sub = f"{path}[{i}]"
            if not isinstance(p, str) or not p:
                self.err(sub, "must be a non-empty string")
            elif not self.clean(p, sub):
                continue  # a path with a control character could never match
            elif p.startswith("~"):
                try:
                    re.compile(p[1:])
                except re.error as exc:
                    self.err(sub, f"invalid regex: {exc}")
                except (RecursionError, OverflowError, ValueError) as exc:  # `((((…`, `a{10**20}`
                    self.err(sub, f"invalid regex: {type(exc).__name__}: {exc}")
                else:
                    out.append(p)
            elif not p.startswith("/"):
                self.err(sub, "must start with '/' (or '~' for a regex)")
            else:
                out.append(p)
        return tuple(out) if len(out) == len(raw) else None

    def name_targets(self, targets: list[TargetConfig], path: str) -> list[TargetConfig]:
        explicit = [t.name for t in targets if t.name]
        for n in {n for n in explicit if explicit.count(n) > 1}:
            self.err(path, f"duplicate target name {n!r}")
        defaults = [f"{t.model.name or '-'}@{t.options.upstream_url.hostport}" for t in targets]
        taken = set(explicit)
        out = []
        for i, t in enumerate(targets):
            if t.name:
                out.append(t)
                continue
            name = defaults[i]
            if defaults.count(name) > 1 or name in taken:
                name = f"{name}#{i + 1}"
            taken.add(name)
            out.append(replace(t, name=name))
        return out
