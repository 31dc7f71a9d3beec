"""Config hot reload: read the file again, validate it fully, swap it in or keep the old.

Triggers are SIGHUP (`run_until_signalled`) and, opt-in, `ConfigWatcher`, which polls
the file's identity and content. Polling rather than inotify: it needs no dependency,
and it sees the way Kubernetes updates a mounted ConfigMap — the file is a symlink
through `..data`, which is itself a symlink swapped atomically to a new directory, so
the watched path's own inode and mtime never change, only what it resolves to.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .config import Config, ConfigError
from .logs import event

if TYPE_CHECKING:
    from .server import GatewayServer

log = logging.getLogger("llama_gateway.reload")

WATCH_INTERVAL = 2.0  # seconds between looks at the watched file


async def reload_from(server: GatewayServer, load: Callable[[], Config], source: str) -> bool:
    """Load with `load` (the same loader as at startup, overrides included) and swap the
    result in. On any error the running config stays and every error is logged with
    its key path. Returns whether the new config is running."""
    try:
        config = await asyncio.to_thread(load)
    except ConfigError as exc:
        errors = list(exc.errors)
    except (OSError, UnicodeDecodeError) as exc:
        errors = [f"cannot read the config: {exc.__class__.__name__}: {exc}"]
    else:
        carried = await server.reload(config)
        event(
            log,
            "config.reloaded",
            f"config reloaded from {source}: {len(config.routes)} route(s)",
            source=source,
            routes=len(config.routes),
            **carried.summary(),
        )
        if carried.restart_needed:
            event(
                log,
                "config.restart_needed",
                "changed settings that take effect only after a restart: "
                + ", ".join(carried.restart_needed),
                level=logging.WARNING,
                keys=carried.restart_needed,
            )
        return True
    server.reload_failed()
    event(
        log,
        "config.reload_failed",
        f"config reload from {source} failed; the running config stays: " + "; ".join(errors),
        level=logging.ERROR,
        source=source,
        errors=errors,
    )
    return False


class Reloader:
    """Runs reloads one at a time: a trigger during a reload makes exactly one more
    after it (it may have come from a newer file), never a queue of them."""

    def __init__(self, reload: Callable[[], Awaitable[bool]]) -> None:
        self._reload = reload
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.done = 0  # reloads finished (either way), for tests

    def trigger(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self._reload()
            except Exception:  # our bug: the running config stays, say why
                log.exception("config reload failed unexpectedly")
            self.done += 1
            if not self._again:
                return

    async def wait(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def fingerprint(path: str) -> tuple[str, int, int, int] | None:
    """What the path resolves to and that file's identity; None when it is missing."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_ino, st.st_mtime_ns, st.st_size


def digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


class ConfigWatcher:
    """Calls `changed` when the file at `path` has new content: looked at every
    `interval` seconds (identity first, content only when that moved, so an unchanged
    file costs one stat). A file that is briefly missing mid-swap is waited out."""

    def __init__(
        self, path: str, changed: Callable[[], None], interval: float = WATCH_INTERVAL
    ) -> None:
        self.path = path
        self.changed = changed
        self.interval = interval
        self._seen = fingerprint(path)
        self._digest = digest(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> bool:
        """One look; True when `changed` was called."""
        now = fingerprint(self.path)
        if now is None or now == self._seen:
            return False
        self._seen = now
        content = digest(now[0])
        if content is None or content == self._digest:
            return False  # touched, or swapped to identical content: nothing to do
        self._digest = content
        self.changed()
        return True
