"""The worker side: a normal `llama-gateway serve` started by the supervisor, told so by
one environment variable. It serves on the supervisor's proxy addresses and on a
private status listener (a unix socket the supervisor scrapes), tells the supervisor
when it serves, and drains itself if the supervisor goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..logs import event
from .sockets import Endpoint, unix_listener, worker_proxy_sockets

if TYPE_CHECKING:
    from ..server import GatewayServer

# Internal, never a setting: the leading underscore keeps it out of LLAMA_GATEWAY_<KEY>.
ENV = "_LLAMA_GATEWAY_WORKER"
READY = b"ready\n"

log = logging.getLogger("llama_gateway.workers")


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """What a worker gets from its supervisor."""

    index: int  # the worker's slot, 0 … N-1 (a restarted worker keeps its slot)
    control_fd: int  # socketpair end: "ready" goes up; EOF means the supervisor is gone
    status_path: str  # unix socket for this worker's /healthz /readyz /metrics /status
    mode: str  # sockets.REUSEPORT or sockets.SHARED
    endpoints: tuple[Endpoint, ...] = ()  # reuseport: the addresses to bind
    fds: tuple[int, ...] = ()  # shared: inherited listening sockets
    counters_path: str | None = None  # unix socket: the pod's rate-limit counters

    def to_env(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "control_fd": self.control_fd,
                "status_path": self.status_path,
                "mode": self.mode,
                "endpoints": [e.to_json() for e in self.endpoints],
                "fds": list(self.fds),
                "counters_path": self.counters_path,
            }
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerLink | None:
        """This process's link, or None when it is not a supervisor's worker."""
        raw = env.get(ENV)
        if not raw:
            return None
        d = json.loads(raw)
        return cls(
            index=int(d["index"]),
            control_fd=int(d["control_fd"]),
            status_path=str(d["status_path"]),
            mode=str(d["mode"]),
            endpoints=tuple(Endpoint.from_json(e) for e in d["endpoints"]),
            fds=tuple(int(fd) for fd in d["fds"]),
            counters_path=d.get("counters_path"),
        )

    async def start(self, server: GatewayServer) -> None:
        """`server.start` on the pod's sockets instead of the configured addresses."""
        proxy = worker_proxy_sockets(self.mode, self.endpoints, self.fds)
        status = unix_listener(self.status_path)
        await server.start(proxy_socks=proxy, status_sock=status)

    def started(self) -> None:
        """Called once signal handlers are in place: report ready, then watch the
        supervisor. Its end of the control socket closes when it dies, however it dies;
        the worker then drains as on SIGTERM rather than serve on unsupervised."""
        os.write(self.control_fd, READY)
        os.set_blocking(self.control_fd, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.control_fd, self._readable, loop)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data = os.read(self.control_fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nothing is sent down today; ignore what a newer supervisor might
        loop.remove_reader(self.control_fd)
        event(
            log,
            "worker.orphaned",
            f"worker {self.index}: the supervisor is gone; draining",
            level=logging.WARNING,
            worker=self.index,
        )
        os.kill(os.getpid(), signal.SIGTERM)
