"""Configuration types: YAML → validated, frozen dataclasses, once at startup.

The route `config:` block is Kong's AI Proxy (Advanced) plugin config verbatim. Every
error carries the key path that caused it (`routes[0].config.targets[1].model.options:
...`); all errors of a file are collected so `llama-gateway check` can print them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from balancers.registry import implemented

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
ROUTE_TYPES = (CHAT, COMPLETIONS, EMBEDDINGS)
FORMATS = ("raw", "ollama", "openai")
# Kong's names, in Kong's order, then ours; each has a module in balancers/ (Kong's
# optional `semantic` needs embeddings and is not offered).
ALGORITHMS = (
    "round-robin",
    "lowest-latency",
    "lowest-usage",
    "least-connections",
    "consistent-hashing",
    "priority",
    "least-busy",  # ours: fewest busy slots ÷ capacity, then lowest latency
)
assert frozenset(ALGORITHMS) == implemented(), "config and balancers disagree"
MAX_RESPONSE_BODY = 8 * 1024 * 1024  # bytes; a long non-stream answer is ~100 KiB
MAX_WORKERS = 256  # server.workers: a bound against typos (one process per core is the aim)
FAILOVER_CRITERIA = (
    "error",
    "timeout",
    "invalid_header",
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "non_idempotent",
)


class ConfigError(Exception):
    """Every problem found in one configuration, each as `key.path: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --------------------------------------------------------------------------- typed config


@dataclass(frozen=True, slots=True)
class UpstreamURL:
    scheme: str
    host: str
    port: int
    path: str  # includes the query string, if the operator wrote one

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.path


@dataclass(frozen=True, slots=True)
class ModelOptions:
    llama2_format: str
    upstream_url: UpstreamURL
    raw_flavor: str = "hf"  # raw only: hf (TGI / HF API) | llamacpp (native /completion)
    chat_template: str = "llama2"  # raw only: llama2 (Meta) | kong (Kong's builder)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    input_cost: float | None = None
    output_cost: float | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    options: ModelOptions
    provider: str = "llama2"
    name: str | None = None
    model_alias: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    header_name: str | None = None
    header_value: str | None = field(default=None, repr=False)
    param_name: str | None = None
    param_value: str | None = field(default=None, repr=False)
    param_location: str | None = None  # query | body
    allow_override: bool = False

    def secrets(self) -> tuple[str, ...]:
        """Values that must never be shown: each auth value and, for a header like
        `Bearer <token>`, the token on its own."""
        out: list[str] = []
        for v in (self.header_value, self.param_value):
            if v:
                out.append(v)
                token = v.partition(" ")[2].strip()
                if len(token) >= 4:
                    out.append(token)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    log_statistics: bool = False
    log_payloads: bool = False


@dataclass(frozen=True, slots=True)
class TargetConfig:
    name: str
    route_type: str
    model: ModelConfig
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    weight: int = 100
    description: str | None = None
    # Our extension: requests generated at once on this target's server (None =
    # unlimited); `auto_concurrency` reads it from the server (llama.cpp slots).
    max_concurrency: int | None = None
    auto_concurrency: bool = False

    @property
    def options(self) -> ModelOptions:
        return self.model.options


@dataclass(frozen=True, slots=True)
class HealthDirection:
    interval: float
    successes: int = 0  # healthy direction
    http_failures: int = 0  # unhealthy direction
    tcp_failures: int = 0
    timeouts: int = 0
    http_statuses: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ActiveHealthcheck:
    http_path: str | None = None  # None = by format
    timeout: float = 1.0
    healthy: HealthDirection = HealthDirection(interval=5, successes=2, http_statuses=(200,))
    unhealthy: HealthDirection = HealthDirection(
        interval=5, http_failures=2, tcp_failures=2, timeouts=2
    )


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Our extension: the route's admission queue (used when every allowed target is
    at `max_concurrency`)."""

    max_size: int = 100
    timeout: int = 60000  # ms, like Kong's other balancer timeouts
    priority_header: str = "X-Priority"


PRIORITY_RANGE = (-10, 10)  # X-Priority values: higher first


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    algorithm: str = "round-robin"
    tokens_count_strategy: str = "total-tokens"
    latency_strategy: str = "tpot"
    hash_on_header: str = "X-Kong-LLM-Request-ID"
    slots: int = 10000
    retries: int = 5
    connect_timeout: int = 60000  # ms
    write_timeout: int = 60000
    read_timeout: int = 60000
    failover_criteria: tuple[str, ...] = ("error", "timeout")
    max_fails: int = 0
    fail_timeout: int = 10000
    healthchecks: ActiveHealthcheck | None = ActiveHealthcheck()
    queue: QueueConfig | None = None


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Kong's consumer with key-auth credentials. Keys are kept only as digests
    (`security.keyauth.digest`): the plaintext never reaches a typed config object."""

    username: str
    key_digests: tuple[bytes, ...] = field(default=(), repr=False)
    custom_id: str | None = None
    # Our extension: the route names this consumer may use (None = every route).
    allowed_routes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class KeyAuthConfig:
    """Kong's key-auth plugin config, on a route (our extension: Kong attaches plugins
    to routes separately). `Authorization: Bearer <key>` is always accepted too."""

    key_names: tuple[str, ...] = ("apikey",)
    key_in_header: bool = True
    key_in_query: bool = True
    # Also a top-level field of the JSON body: the body is then read before the check.
    key_in_body: bool = False
    # Ours defaults to true (Kong: false): a client key has no business upstream.
    hide_credentials: bool = True


@dataclass(frozen=True, slots=True)
class RateLimit:
    kind: str  # requests | tokens
    limit: int
    window: int  # seconds; windows are aligned to the epoch, so replicas agree


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = field(repr=False)  # may carry a password
    timeout: float = 0.5  # seconds, connect and each command
    prefix: str = "llama_gateway"


@dataclass(frozen=True, slots=True)
class RateLimitingConfig:
    identifier: str  # consumer | ip
    limits: tuple[RateLimit, ...]
    strategy: str = "local"  # local | redis
    redis: RedisConfig | None = None
    # Kong's name: true = when the counter store fails, let requests through.
    fault_tolerant: bool = True
    hide_client_headers: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    paths: tuple[str, ...]
    plugin: str
    route_type: str
    targets: tuple[TargetConfig, ...]
    balancer: BalancerConfig = BalancerConfig()
    response_streaming: str = "allow"
    max_request_body_size: int = 1048576
    # Our extension: the largest non-stream upstream body read (0 = no limit). An
    # upstream that writes without end must not take the gateway's memory with it.
    max_response_body: int = MAX_RESPONSE_BODY
    model_name_header: bool = True
    key_auth: KeyAuthConfig | None = None
    rate_limiting: RateLimitingConfig | None = None

    def secrets(self) -> tuple[str, ...]:
        out = [s for t in self.targets for s in t.auth.secrets()]
        rl = self.rate_limiting
        if rl is not None and rl.redis is not None:
            password = urlsplit(rl.redis.url).password
            if password:
                out.append(password)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    status_host: str = "127.0.0.1"
    status_port: int = 8100
    drain_timeout: float = 30.0
    # Proxy processes (gateway/workers): 1 = this process serves, as always; N > 1 or
    # "auto" (the CPUs this process may use) = a supervisor and N worker processes.
    workers: int | str = 1
    # Client-side limits (nginx's names and defaults; seconds). A head (request line and
    # headers) must arrive within client_header_timeout of its first byte (or of the
    # connection's start); body reads may pause at most client_body_timeout; an idle
    # keep-alive connection is closed after keepalive_timeout. 0 turns a timeout off.
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    # And a body must keep up this average rate (bytes/s) once client_body_timeout has
    # passed (Apache mod_reqtimeout's MinRate): per-read pauses alone let a body sent a
    # byte every few seconds hold its connection for ever. 0 = no minimum.
    client_body_min_rate: float = 500.0
    keepalive_timeout: float = 75.0
    # Open client connections on the proxy listener (per process); more are answered
    # 503 and closed. 0 = no limit.
    max_connections: int = 4096
    # Addresses (CIDRs) of proxies in front of the gateway whose X-Forwarded-For is
    # believed: the client's address (rate limits by ip) is then the nearest address in
    # that header that is not one of them. Empty: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FrontendsConfig:
    """Our extension: model-addressed front doors. A prefix is None when that front door
    is off (the default), else the path its endpoints hang under ("" = at the root)."""

    openai: str | None = None  # {prefix}/chat/completions, /completions, /embeddings, /models
    ollama: str | None = None  # {prefix}/api/chat, /api/generate, /api/embed, /api/tags, …

    @property
    def enabled(self) -> bool:
        return self.openai is not None or self.ollama is not None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    routes: tuple[RouteConfig, ...]
    frontends: FrontendsConfig = FrontendsConfig()
    consumers: tuple[ConsumerConfig, ...] = ()
