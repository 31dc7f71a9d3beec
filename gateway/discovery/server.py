"""One upstream server as discovery sees it: the readings taken from it (each with the
time it was read), the target states they are written to, and the bytes of its GETs."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Generic, Literal, TypedDict, TypeVar

from yarl import URL

from balancers import TargetState

from ..health import ProbeSpec
from ..http1 import Origin
from ..outbound import get_request, origin_of

Kind = Literal["ollama", "openai", "llamacpp"]
USER_AGENT = "llama-gateway-discovery"

T = TypeVar("T")


class Signal(Generic[T]):
    """One value read from the server and when (discovery's clock); -inf: never read."""

    __slots__ = ("at", "value")

    def __init__(self) -> None:
        self.value: T | None = None
        self.at = -math.inf

    def set(self, value: T | None, now: float) -> None:
        self.value, self.at = value, now

    def expire(self, oldest: float) -> bool:
        """Forget a value read before `oldest`; True when one was forgotten now."""
        if self.value is None or self.at >= oldest:
            return False
        self.value = None
        return True


@dataclass(eq=False, slots=True)
class Member:
    state: TargetState
    kind: Kind
    auto_capacity: bool


class ServerSnapshot(TypedDict):
    """One server as /status and tests see it. Never a credential."""

    url: str  # origin; a query credential masked
    kinds: list[str]
    llama_server: bool  # load read from llama-server's endpoints
    targets: list[str]
    polling: bool
    interval: float
    polls: int
    last_poll: float | None  # wall time
    last_read: float | None  # wall time of the newest successful read
    last_error: str | None
    models_installed: list[str] | None
    models_loaded: list[str] | None
    busy: int | None
    deferred: int | None
    slots: int | None
    sleeping: bool | None
    off: list[str]  # endpoints the server does not serve (asked again later)


@dataclass(eq=False)
class Server:
    """One server's requests, readings, and the states they are written to."""

    spec: ProbeSpec
    origin: Origin = field(init=False)
    where: str = field(init=False)  # host:port, for logs: never the query
    members: list[Member] = field(default_factory=list)
    kinds: set[Kind] = field(default_factory=set)
    installed: Signal[frozenset[str]] = field(default_factory=Signal)
    loaded: Signal[frozenset[str]] = field(default_factory=Signal)
    busy: Signal[int] = field(default_factory=Signal)
    deferred: Signal[int] = field(default_factory=Signal)
    slots: int | None = None  # last known; never expires (see the module doc)
    # What the gateway had in flight on this server when `busy` was read: the server's
    # count includes it, and only the rest is load from other clients.
    own_at_busy: int = 0
    sleeping: bool | None = None
    llama_server: bool = False  # found behind an openai target
    off_until: dict[str, float] = field(default_factory=dict)  # path -> clock()
    polls: int = 0
    last_poll: float | None = None
    last_read: float | None = None
    last_error: str | None = None
    warned: bool = False  # an unexpected exception was logged once already
    task: asyncio.Task[None] | None = None
    _requests: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin = origin_of(URL(self.spec.url))
        self.where = f"{self.origin.bracketed_host}:{self.origin.port}"

    def __repr__(self) -> str:
        return f"<discovery server {self.where} kinds={sorted(self.kinds)}>"

    @property
    def reads_load(self) -> bool:
        return "llamacpp" in self.kinds or self.llama_server

    def request(self, path: str) -> bytes:
        """The bytes of `GET path` (built once: they hold the credential)."""
        data = self._requests.get(path)
        if data is None:
            url = URL(self.spec.url)
            data = self._requests[path] = get_request(
                url.with_path(path).with_query(url.query),
                self.origin,
                self.spec.headers,
                USER_AGENT,
                b"Accept: application/json, text/plain\r\n",
                b"Accept-Encoding: identity\r\n",
            )
        return data

    def expire(self, oldest: float) -> list[str]:
        """Forget readings older than `oldest`; the names of those forgotten now."""
        named = (
            ("models", self.installed),
            ("loaded models", self.loaded),
            ("busy", self.busy),
            ("deferred", self.deferred),
        )
        return [name for name, sig in named if sig.expire(oldest)]

    def write(self) -> None:
        """Copy the readings to every state on this server."""
        newest = max(self.installed.at, self.loaded.at, self.busy.at, self.deferred.at)
        for m in self.members:
            st = m.state
            st.busy_reported = self.busy.value
            st.own_at_signal = self.own_at_busy
            st.deferred_reported = self.deferred.value
            if newest > st.signals_at:
                st.signals_at = newest
            if m.kind != "llamacpp":  # a native llama.cpp request names no model
                st.models_installed = self.installed.value
                st.models_loaded = self.loaded.value
            if m.auto_capacity and self.slots is not None:
                st.capacity = self.slots
