"""YAML document → typed config (SPEC §1); every error names its key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from ._balancer import BalancerChecks
from .schema import (
    FORMATS,
    ROUTE_TYPES,
    AuthConfig,
    BalancerConfig,
    Config,
    ConfigError,
    LoggingConfig,
    ModelConfig,
    ModelOptions,
    RouteConfig,
    ServerConfig,
    TargetConfig,
    UpstreamURL,
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_file(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return load_text(text, env)


def load_text(text: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"]) from None
    return parse(raw, os.environ if env is None else env)


def parse(raw: Any, env: Mapping[str, str]) -> Config:
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
_KONG_DEFAULTS_OPTIONS = {
    "upstream_path": None,
    "anthropic_version": None,
    "azure_instance": None,
    "azure_api_version": "2023-05-15",
    "azure_deployment_id": None,
    "mistral_format": None,
    "bedrock": None,
    "gemini": None,
    "huggingface": None,
    "cohere": None,
    "embeddings_dimensions": None,
}
_KONG_DEFAULTS_AUTH = {
    "azure_use_managed_identity": False,
    "azure_client_id": None,
    "azure_client_secret": None,
    "azure_tenant_id": None,
    "gcp_use_service_account": False,
    "gcp_service_account_json": None,
    "aws_access_key_id": None,
    "aws_secret_access_key": None,
}
_TARGET_KEYS = {"route_type", "model", "auth", "logging", "weight", "description", "name"}
_SINGLE_TARGET_KEYS = {
    "route_type",
    "model",
    "auth",
    "logging",
    "response_streaming",
    "max_request_body_size",
    "model_name_header",
}


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _Validator(BalancerChecks):
    # ---- document --------------------------------------------------------------------

    def config(self, raw: Any) -> Config | None:
        if raw is None:
            self.err("", "empty configuration")
            return None
        top = self.mapping(raw, "", {"server", "routes"}, {})
        server = self.server(top.get("server"))
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
        return Config(server=server, routes=tuple(routes))

    def server(self, raw: Any) -> ServerConfig:
        d = self.mapping(
            raw, "server", {"host", "port", "status_host", "status_port", "drain_timeout"}, {}
        )
        s = ServerConfig()
        return ServerConfig(
            host=self.string(d, "host", "server", s.host),
            port=self.number(d, "port", "server", s.port, integer=True, lo=0, hi=65535),
            status_host=self.string(d, "status_host", "server", s.status_host),
            status_port=self.number(
                d, "status_port", "server", s.status_port, integer=True, lo=0, hi=65535
            ),
            drain_timeout=self.number(d, "drain_timeout", "server", s.drain_timeout, lo=0),
        )

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
        d = self.mapping(raw, path, {"name", "paths", "plugin", "config"}, {})
        if not d:
            if raw is not None and isinstance(raw, dict):
                self.err(path, "empty route")
            return None
        name = self.string(d, "name", path)
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
        name_header = self.boolean(c, "model_name_header", cpath, True)
        if not targets or name is None or paths is None:
            return None
        route_types = {t.route_type for t in targets}
        if len(route_types) > 1:
            self.err(f"{cpath}.targets", "all targets of a route must share one route_type")
            return None
        targets = self.name_targets(targets, f"{cpath}.targets")
        return RouteConfig(
            name=name,
            paths=paths,
            plugin=plugin,
            route_type=targets[0].route_type,
            targets=tuple(targets),
            balancer=balancer,
            response_streaming=streaming,
            max_request_body_size=max_body,
            model_name_header=name_header,
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
            elif p.startswith("~"):
                try:
                    re.compile(p[1:])
                except re.error as exc:
                    self.err(sub, f"invalid regex: {exc}")
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

    def target(self, raw: Any, path: str) -> TargetConfig | None:
        d = self.mapping(raw, path, _TARGET_KEYS, {})
        if not d and not isinstance(raw, dict):
            return None
        route_type = self.string(d, "route_type", path)
        if route_type is not None and route_type not in ROUTE_TYPES:
            self.err(
                f"{path}.route_type",
                f"must be one of: {', '.join(ROUTE_TYPES)} (got {route_type!r}; "
                "other Kong route types are not supported for llama2)",
            )
            route_type = None
        model = self.model(d.get("model"), f"{path}.model")
        auth = self.auth(d.get("auth"), f"{path}.auth")
        lg = self.mapping(
            d.get("logging"), f"{path}.logging", {"log_statistics", "log_payloads"}, {}
        )
        logging_cfg = LoggingConfig(
            log_statistics=self.boolean(lg, "log_statistics", f"{path}.logging", False),
            log_payloads=self.boolean(lg, "log_payloads", f"{path}.logging", False),
        )
        weight = self.number(d, "weight", path, 100, integer=True, lo=1, hi=65535)
        description = self.string(d, "description", path, None)
        name = self.string(d, "name", path, "")
        if route_type is None or model is None:
            return None
        return TargetConfig(
            name=name,
            route_type=route_type,
            model=model,
            auth=auth,
            logging=logging_cfg,
            weight=weight,
            description=description,
        )

    def model(self, raw: Any, path: str) -> ModelConfig | None:
        if raw is None:
            self.err(path, "required")
            return None
        d = self.mapping(raw, path, {"provider", "name", "model_alias", "options"}, {})
        provider = self.string(d, "provider", path)
        if provider is not None and provider != "llama2":
            self.err(f"{path}.provider", f"provider {provider!r} is not supported (only 'llama2')")
        name = self.string(d, "name", path, None)
        alias = self.string(d, "model_alias", path, None)
        opath = f"{path}.options"
        o = self.mapping(
            d.get("options"),
            opath,
            {
                "llama2_format",
                "upstream_url",
                "raw_flavor",
                "chat_template",
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "input_cost",
                "output_cost",
            },
            _KONG_DEFAULTS_OPTIONS,
        )
        fmt = o.get("llama2_format")
        if fmt is None:
            self.err(opath, "must set 'model.options.llama2_format' for llama2 provider")
        else:
            fmt = self.choice(o, "llama2_format", opath, FORMATS, None)
        url = self.upstream_url(o, opath)
        raw_flavor = self.choice(o, "raw_flavor", opath, ("hf", "llamacpp"), "hf")
        template = self.choice(o, "chat_template", opath, ("llama2", "kong"), "llama2")
        if fmt != "raw":
            for key in ("raw_flavor", "chat_template"):
                if key in o:
                    self.err(f"{opath}.{key}", "only applies to llama2_format: raw")
        opts_kwargs = dict(
            max_tokens=self.number(o, "max_tokens", opath, None, integer=True, lo=0, lo_open=True),
            temperature=self.number(o, "temperature", opath, None, lo=0, hi=5),
            top_p=self.number(o, "top_p", opath, None, lo=0, hi=1),
            top_k=self.number(o, "top_k", opath, None, integer=True, lo=0, hi=500),
            input_cost=self.number(o, "input_cost", opath, None, lo=0, lo_open=True),
            output_cost=self.number(o, "output_cost", opath, None, lo=0, lo_open=True),
        )
        if fmt is None or url is None or provider != "llama2":
            return None
        return ModelConfig(
            provider=provider,
            name=name,
            model_alias=alias,
            options=ModelOptions(
                llama2_format=fmt,
                upstream_url=url,
                raw_flavor=raw_flavor,
                chat_template=template,
                **opts_kwargs,
            ),
        )

    def upstream_url(self, o: dict, opath: str) -> UpstreamURL | None:
        if o.get("upstream_url") is None:
            self.err(
                opath, "must set 'model.options.upstream_url' for self-hosted providers/models"
            )
            return None
        value = self.string(o, "upstream_url", opath)
        if not value:
            return None
        sub = f"{opath}.upstream_url"
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            self.err(sub, f"invalid URL: {exc}")
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.err(sub, "must be an absolute http:// or https:// URL")
            return None
        if parts.username or parts.password:
            # Credentials in the URL would end up in logs and /status; auth.* exists for that.
            self.err(sub, "must not contain credentials (use auth.header_* or auth.param_*)")
            return None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return UpstreamURL(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or (443 if parts.scheme == "https" else 80),
            path=path,
        )

    def auth(self, raw: Any, path: str) -> AuthConfig:
        d = self.mapping(
            raw,
            path,
            {
                "header_name",
                "header_value",
                "param_name",
                "param_value",
                "param_location",
                "allow_override",
            },
            _KONG_DEFAULTS_AUTH,
        )
        header_name = self.string(d, "header_name", path, None)
        header_value = self.string(d, "header_value", path, None)
        if header_name is not None and not _TOKEN.fullmatch(header_name):
            self.err(f"{path}.header_name", "must be a valid HTTP header name")
        if header_value is not None and any(c in header_value for c in "\r\n\0"):
            # Typical of a secret file with a trailing newline; aiohttp would refuse
            # every request at run time, so say it once, here.
            self.err(f"{path}.header_value", "must not contain control characters (CR, LF, NUL)")
        if (header_name is None) != (header_value is None):
            self.err(
                path,
                "all or none of these fields must be set: 'auth.header_name', 'auth.header_value'",
            )
        param_name = self.string(d, "param_name", path, None)
        param_value = self.string(d, "param_value", path, None)
        param_location = self.choice(d, "param_location", path, ("query", "body"), None)
        trio = (param_name, param_value, param_location)
        if any(x is not None for x in trio) and not all(x is not None for x in trio):
            self.err(
                path,
                "all or none of these fields must be set: 'auth.param_name', "
                "'auth.param_value', 'auth.param_location'",
            )
        return AuthConfig(
            header_name=header_name,
            header_value=header_value,
            param_name=param_name,
            param_value=param_value,
            param_location=param_location,
            allow_override=self.boolean(d, "allow_override", path, False),
        )
