"""`consumers`, and the route-level `key_auth` and `rate_limiting` blocks."""

from __future__ import annotations

import importlib.util
from typing import Any
from urllib.parse import urlsplit

from ..security.digest import digest
from ._checks import MAX_NAME, TOKEN, Checker, shown
from .schema import (
    ConsumerConfig,
    KeyAuthConfig,
    RateLimit,
    RateLimitingConfig,
    RedisConfig,
    RouteConfig,
)

_MAX_WINDOW = 366 * 24 * 3600
_MAX_LIMIT = 2**53  # exact in a double and in Redis' Lua numbers


def _bad_key(key: str) -> str | None:
    if not key:
        return "must be a non-empty string"
    if key != key.strip() or any(c.isspace() or not c.isprintable() for c in key):
        return "must not contain spaces or control characters"
    if len(key) > 4096:
        return "must be at most 4096 characters"
    return None


class SecurityChecks(Checker):
    def consumers(self, raw: Any) -> tuple[ConsumerConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.err("consumers", "must be a list")
            return ()
        out: list[ConsumerConfig] = []
        names: set[str] = set()
        owners: dict[bytes, str] = {}
        for i, item in enumerate(raw):
            path = f"consumers[{i}]"
            d = self.mapping(
                item, path, {"username", "custom_id", "keyauth_credentials", "allowed_routes"}, {}
            )
            if not d:
                self.err(path, "must be a mapping with a username")
                continue
            name = self.name(d, "username", path)  # a metric label and a log field
            if name == "":
                self.err(f"{path}.username", "must be a non-empty string")
                name = None
            if name is not None and name in names:
                self.err(f"{path}.username", f"duplicate consumer {shown(name)}")
            custom_id = self.wire_string(d, "custom_id", path, None)
            digests = self._credentials(d.get("keyauth_credentials"), path, name or "", owners)
            allowed = self._names(d.get("allowed_routes"), f"{path}.allowed_routes")
            if name is None:
                continue
            names.add(name)
            out.append(ConsumerConfig(name, digests, custom_id, allowed))
        return tuple(out)

    def _credentials(
        self, raw: Any, path: str, owner: str, owners: dict[bytes, str]
    ) -> tuple[bytes, ...]:
        path = f"{path}.keyauth_credentials"
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.err(path, "must be a list of {key: ...}")
            return ()
        out: list[bytes] = []
        for j, cred in enumerate(raw):
            cpath = f"{path}[{j}]"
            c = self.mapping(cred, cpath, {"key"}, {})
            key = self.string(c, "key", cpath)
            if key is None:
                continue
            why = _bad_key(key)
            if why is not None:  # never echo the key itself
                self.err(f"{cpath}.key", why)
                continue
            d = digest(key)
            if d in owners:
                self.err(f"{cpath}.key", f"the same key is already a credential of {owners[d]!r}")
                continue
            owners[d] = owner
            out.append(d)
        return tuple(out)

    def _names(self, raw: Any, path: str) -> tuple[str, ...] | None:
        if raw is None:
            return None
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            self.err(path, "must be a list of route names")
            return None
        for i, x in enumerate(raw):
            self.clean(x, f"{path}[{i}]")
        return tuple(raw)

    def check_consumers(
        self, consumers: tuple[ConsumerConfig, ...], routes: list[RouteConfig]
    ) -> None:
        """Cross-checks once every route is known."""
        route_names = {r.name for r in routes}
        for i, c in enumerate(consumers):
            for name in c.allowed_routes or ():
                if name not in route_names:
                    self.err(f"consumers[{i}].allowed_routes", f"no route named {shown(name)}")
        for r in routes:
            if r.key_auth is not None and not any(c.key_digests for c in consumers):
                self.err(
                    f"routes[{routes.index(r)}].key_auth",
                    "no consumer has a key: add consumers with keyauth_credentials",
                )

    # ---- routes ----------------------------------------------------------------------

    def key_auth(self, raw: Any, path: str) -> KeyAuthConfig | None:
        if raw is None:
            return None
        if raw is True:
            return KeyAuthConfig()
        path = f"{path}.key_auth"
        d = self.mapping(
            raw,
            path,
            {"key_names", "key_in_header", "key_in_query", "key_in_body", "hide_credentials"},
            {"run_on_preflight": True, "anonymous": None},
        )
        dflt = KeyAuthConfig()
        names = dflt.key_names
        raw_names = d.get("key_names")
        if raw_names is not None:
            if (
                not isinstance(raw_names, list)
                or not raw_names
                or not all(isinstance(n, str) and TOKEN.fullmatch(n) for n in raw_names)
            ):
                self.err(f"{path}.key_names", "must be a non-empty list of header/query names")
            else:
                names = tuple(raw_names)
        cfg = KeyAuthConfig(
            key_names=names,
            key_in_header=self.boolean(d, "key_in_header", path, dflt.key_in_header),
            key_in_query=self.boolean(d, "key_in_query", path, dflt.key_in_query),
            key_in_body=self.boolean(d, "key_in_body", path, dflt.key_in_body),
            hide_credentials=self.boolean(d, "hide_credentials", path, dflt.hide_credentials),
        )
        return cfg

    def rate_limiting(
        self, raw: Any, path: str, key_auth: KeyAuthConfig | None
    ) -> RateLimitingConfig | None:
        if raw is None:
            return None
        path = f"{path}.rate_limiting"
        d = self.mapping(
            raw,
            path,
            {
                "identifier",
                "limits",
                "strategy",
                "redis",
                "fault_tolerant",
                "hide_client_headers",
            },
            {},
        )
        default_id = "consumer" if key_auth is not None else "ip"
        ident = self.choice(d, "identifier", path, ("consumer", "ip"), default_id)
        if ident == "consumer" and key_auth is None:
            self.err(f"{path}.identifier", "consumer needs key_auth on this route (or use ip)")
        limits = self._limits(d.get("limits"), f"{path}.limits")
        strategy = self.choice(d, "strategy", path, ("local", "redis"), "local")
        redis = self._redis(d.get("redis"), f"{path}.redis", strategy)
        if not limits:
            return None
        return RateLimitingConfig(
            identifier=ident,
            limits=limits,
            strategy=strategy,
            redis=redis,
            fault_tolerant=self.boolean(d, "fault_tolerant", path, True),
            hide_client_headers=self.boolean(d, "hide_client_headers", path, False),
        )

    def _limits(self, raw: Any, path: str) -> tuple[RateLimit, ...]:
        if not isinstance(raw, list) or not raw:
            self.err(
                path,
                "must be a non-empty list of {requests: N, window: S} or {tokens: N, window: S}",
            )
            return ()
        out: list[RateLimit] = []
        for i, item in enumerate(raw):
            ipath = f"{path}[{i}]"
            d = self.mapping(item, ipath, {"requests", "tokens", "window"}, {})
            kinds = [k for k in ("requests", "tokens") if k in d]
            if len(kinds) != 1:
                self.err(ipath, "needs exactly one of requests or tokens")
                continue
            kind = kinds[0]
            limit = self.number(d, kind, ipath, None, integer=True, lo=1, hi=_MAX_LIMIT)
            if "window" not in d:
                self.err(f"{ipath}.window", "required (seconds)")
                continue
            window = self.number(d, "window", ipath, None, integer=True, lo=1, hi=_MAX_WINDOW)
            if limit is None or window is None:
                continue
            rl = RateLimit(kind, limit, window)
            if any(o.kind == kind and o.window == window for o in out):
                self.err(ipath, f"a {kind} limit for a {window} s window is already set")
                continue
            out.append(rl)
        return tuple(out)

    def _redis(self, raw: Any, path: str, strategy: str) -> RedisConfig | None:
        if strategy != "redis":
            if raw is not None:
                self.err(path, "only used with strategy: redis")
            return None
        d = self.mapping(raw, path, {"url", "timeout", "prefix"}, {})
        url = self.string(d, "url", path)
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("redis", "rediss", "unix") and bool(parts.hostname or parts.path)
            parts.port  # noqa: B018 -- raises on a bad port
        except ValueError:
            ok = False
        if not ok:  # the URL may hold a password: not echoed
            self.err(f"{path}.url", "must be a redis://, rediss:// or unix:// URL")
            return None
        if importlib.util.find_spec("redis") is None:
            self.err(
                path,
                "strategy redis needs the redis client: pip install 'llama-gateway[redis]'",
            )
        dflt = RedisConfig(url="")
        prefix = self.wire_string(d, "prefix", path, dflt.prefix, max_len=MAX_NAME)
        return RedisConfig(
            url=url,
            timeout=self.number(d, "timeout", path, dflt.timeout, lo=0, lo_open=True, hi=60),
            prefix=prefix,
        )
