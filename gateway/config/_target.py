"""Validation of one target: route type, model and its options, auth."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from yarl import URL

from ._checks import Checker
from .schema import (
    EMBEDDINGS,
    FORMATS,
    ROUTE_TYPES,
    AuthConfig,
    LoggingConfig,
    ModelConfig,
    ModelOptions,
    TargetConfig,
    UpstreamURL,
)

# Kong schema keys we accept only at their Kong default (value None means "absent/null").
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
_TARGET_KEYS = {
    "route_type",
    "model",
    "auth",
    "logging",
    "weight",
    "description",
    "name",
    "max_concurrency",
}
# A host name as sent (after IDNA): DNS labels, plus '_' (container and service names).
_HOST = re.compile(r"[A-Za-z0-9_.-]+")
# Model options that shape a generation: an embeddings target has nothing to apply them
# to, so they are refused rather than silently ignored.
_GENERATION_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "chat_template")


class TargetChecks(Checker):
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
        if route_type == EMBEDDINGS and model is not None:
            self.embeddings_model(d["model"], model, f"{path}.model.options")
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
        name = self.name(d, "name", path, "")
        limit, auto = self.max_concurrency(d, path, model)
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
            max_concurrency=limit,
            auto_concurrency=auto,
        )

    def max_concurrency(
        self, d: dict[str, Any], path: str, model: ModelConfig | None
    ) -> tuple[int | None, bool]:
        """An integer >= 1, or `auto` where the server reports its slots (llama.cpp)."""
        value = d.get("max_concurrency")
        if value is None:
            return None, False
        if value == "auto":
            o = model.options if model is not None else None
            if o is not None and not (o.llama2_format == "raw" and o.raw_flavor == "llamacpp"):
                self.err(
                    f"{path}.max_concurrency",
                    "auto reads the slot count from llama-server (llama2_format: raw with "
                    f"raw_flavor: llamacpp); a {o.llama2_format} server cannot tell it: "
                    "set a number",
                )
            return None, True
        return self.number(d, "max_concurrency", path, None, integer=True, lo=1, hi=65535), False

    def embeddings_model(self, raw: dict[str, Any], model: ModelConfig, opath: str) -> None:
        """An embeddings target needs a server with an embeddings endpoint, and takes
        no generation options."""
        o = model.options
        if o.llama2_format == "raw" and o.raw_flavor != "llamacpp":
            self.err(
                f"{opath}.raw_flavor",
                "llm/v1/embeddings needs an embeddings endpoint, which TGI (raw_flavor: hf) "
                "does not have; use raw_flavor: llamacpp (llama-server /embedding), "
                "llama2_format: ollama (/api/embed) or llama2_format: openai (/v1/embeddings)",
            )
        given = raw.get("options")
        for key in _GENERATION_OPTIONS:
            if key == "chat_template" and o.llama2_format != "raw":
                continue  # already refused as raw-only
            if isinstance(given, dict) and given.get(key) is not None:
                self.err(
                    f"{opath}.{key}", "does not apply to llm/v1/embeddings (nothing is generated)"
                )

    def model(self, raw: Any, path: str) -> ModelConfig | None:
        if raw is None:
            self.err(path, "required")
            return None
        d = self.mapping(raw, path, {"provider", "name", "model_alias", "options"}, {})
        provider = self.string(d, "provider", path)
        if provider is not None and provider != "llama2":
            self.err(f"{path}.provider", f"provider {provider!r} is not supported (only 'llama2')")
        name = self.name(d, "name", path, None)
        alias = self.name(d, "model_alias", path, None)
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
            max_tokens=self.number(
                o, "max_tokens", opath, None, integer=True, lo=0, lo_open=True, hi=2**31 - 1
            ),
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
        # urlsplit silently drops TAB, CR and LF; any other control character or a
        # space would reach the request line or the Host field.
        if not self.clean(value, sub):
            return None
        if any(c.isspace() for c in value):
            self.err(sub, "must not contain spaces (write a space in the path as %20)")
            return None
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
        if not self.url_host(value, sub):
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

    def url_host(self, value: str, path: str) -> bool:
        """Whether the URL's host can be sent: as the client will (IDNA for a Unicode
        name), an IP address or a DNS-style name. `a b`, `a<b>` or a host IDNA refuses
        would otherwise fail at startup, or go into the Host field."""
        try:
            host = URL(value).raw_host or ""
        except (ValueError, UnicodeError) as exc:
            self.err(path, f"invalid host: {exc}")
            return False
        if ":" in host:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                self.err(path, "invalid IPv6 address")
                return False
        elif not _HOST.fullmatch(host):
            self.err(path, "invalid host name (letters, digits, '-', '.' and '_' only)")
            return False
        return True

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
        header_name = self.token(d, "header_name", path, None)
        # The value goes on the wire as is, where a CR or LF would split the request (a
        # secret file's trailing newline is the usual one); HTAB is legal in a field.
        header_value = self.wire_string(d, "header_value", path, None, secret=True, tab=True)
        if (header_name is None) != (header_value is None):
            self.err(
                path,
                "all or none of these fields must be set: 'auth.header_name', 'auth.header_value'",
            )
        param_name = self.wire_string(d, "param_name", path, None)
        param_value = self.wire_string(d, "param_value", path, None, secret=True)
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
