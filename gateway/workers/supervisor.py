"""The supervisor of `--workers N`: one process that serves no request itself.

It binds the proxy address once (gateway/workers/sockets.py), starts N workers — each
`python -m gateway` with this process's own arguments, so every flag, environment
setting and log option applies to them unchanged — and then:

- restarts a worker that dies (at once after a stable run, then with a growing
  backoff, so a worker that cannot start does not spin), and kills and restarts one
  that stops answering its private /healthz;
- on SIGTERM/SIGINT turns the pod's /readyz to 503 and forwards SIGTERM to every
  worker, which drains as a single process does; a second signal is forwarded too
  (the workers cut their drains short). Workers still running `drain_timeout` plus a
  margin later are killed; the supervisor exits 0;
- forwards SIGHUP (config reload) to every worker, and with --watch-config is the one
  that watches the file (the workers do not), so the pod reloads once per change;
- serves the pod's status listener (statusapp.py).

Workers run in their own session: a terminal's Ctrl-C or a signal to the process group
reaches the supervisor only, which forwards it once (a worker signalled twice would cut
its drain short). If the supervisor itself dies, its end of each worker's control
socket closes and the workers drain and exit (child.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from .. import events
from ..config import Config
from ..logs import event
from ..reload import ConfigWatcher
from ..security.podstore import CounterServer
from .child import ENV, READY, WorkerLink
from .podmetrics import PodMetrics
from .slot import BACKOFF, DRAINING, READY_STATE, REASONS, STARTING, Slot, Timing, watch
from .sockets import SHARED, bind_pod, endpoints, socket_mode

log = logging.getLogger("llama_gateway.workers")


class Supervisor:
    def __init__(
        self,
        config: Config,
        argv: Sequence[str],
        count: int,
        *,
        host: str,
        port: int,
        status_host: str,
        status_port: int,
        watch: str | None = None,
        timing: Timing | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.argv = list(argv)
        self.count = count
        self.host, self.port = host, port
        self.status_host, self.status_port = status_host, status_port
        self.watch = watch
        self.timing = timing or Timing()
        self.python = python
        self.mode = ""
        self.slots: list[Slot] = []
        self.restarts = dict.fromkeys(REASONS, 0)
        self.pod_metrics = PodMetrics()
        self.started_up = False
        self.started_wall = time.time()
        self.bound_port = self.bound_status_port = 0  # once listening (port 0: the real one)
        self._socks: list[socket.socket] = []
        self._counters_path: str | None = None  # set in run()
        self._stop = asyncio.Event()
        self._startup_failed = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self._keepers: list[asyncio.Task[None]] = []

    @property
    def draining(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        from .statusapp import PodStatusApp  # aiohttp: only once serving

        try:
            self.mode = socket_mode()
            self._socks = bind_pod(self.host, self.port, self.mode)
        except (ValueError, OSError) as exc:
            events.listen_failed(str(exc))
            return 1
        workdir = tempfile.mkdtemp(prefix="llama-gateway-")  # 0700: the status sockets
        self.slots = [Slot(i, os.path.join(workdir, f"w{i}.sock")) for i in range(self.count)]
        status = PodStatusApp(self)
        # Rate limits with `strategy: local` count for the pod here, not per worker.
        self._counters_path = os.path.join(workdir, "counters.sock")
        counters = CounterServer()
        try:
            await counters.start(self._counters_path)
            try:
                status_port = await status.start(self.status_host, self.status_port)
            except OSError as exc:
                events.listen_failed(str(exc))
                return 1
            return await self._supervise(status_port)
        finally:
            await status.stop()
            await counters.stop()
            for sock in self._socks:
                sock.close()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _supervise(self, status_port: int) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        keepers = [loop.create_task(self._keep(s), name=f"worker-{s.index}") for s in self.slots]
        self._keepers = keepers
        watcher = ConfigWatcher(self.watch, self.reload) if self.watch else None
        self._warn_per_worker_capacity()
        try:
            if not await self._start_up():
                failed = self._startup_failed.is_set()  # else: stopped while starting
                await self._drain()
                return 1 if failed else 0
            if watcher is not None:
                watcher.start()
            host, port = self._socks[0].getsockname()[:2]
            self.bound_port, self.bound_status_port = int(port), status_port
            routes = self.config.routes
            events.started(
                self.host or str(host),
                int(port),
                self.status_host,
                status_port,
                len(routes),
                sum(len(r.targets) for r in routes),
                workers=self.count,
                socket=self.mode,
            )
            await self._stop.wait()
            if watcher is not None:
                await watcher.stop()
            await self._drain()
            events.stopped()
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)

    async def _start_up(self) -> bool:
        """Every worker ready (True), or one died first or a stop came (False)."""
        all_ready = asyncio.ensure_future(asyncio.gather(*(s.ready.wait() for s in self.slots)))
        failed = asyncio.ensure_future(self._startup_failed.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((all_ready, failed, stop), return_when=asyncio.FIRST_COMPLETED)
        ok = all_ready.done() and not failed.done() and not stop.done()
        for fut in (all_ready, failed, stop):
            fut.cancel()
        self.started_up = ok
        return ok

    def _warn_per_worker_capacity(self) -> None:
        """Capacity is counted per worker (each has its own in-flight counts and queue):
        a target with max_concurrency gets up to that many from every worker."""
        capped = [
            f"{r.name}/{t.name}"
            for r in self.config.routes
            for t in r.targets
            if t.max_concurrency is not None or t.auto_concurrency
        ]
        if capped:
            event(
                log,
                "workers.capacity_per_worker",
                f"max_concurrency is enforced by each of the {self.count} workers on its "
                f"own: the pod may send up to {self.count}× that to {', '.join(capped)}",
                level=logging.WARNING,
                workers=self.count,
                targets=capped,
            )

    # ------------------------------------------------------------------ signals

    def _on_stop(self, signame: str) -> None:
        if not self._stop.is_set():
            event(
                log,
                "workers.draining",
                f"{signame}: draining every worker (up to {self._drain_timeout:g}s)",
                signal=signame,
                timeout=self._drain_timeout,
            )
            self._stop.set()  # _drain forwards it
        else:
            log.warning("%s again: forwarded, workers stop now", signame)
            self._signal_all(signal.SIGTERM)

    def reload(self) -> None:
        """SIGHUP, or a change of the watched file: every worker reloads its config.
        A worker still starting gets it once ready (it may have read the file before
        the change)."""
        if self._stop.is_set():
            return
        for slot in self.slots:
            if slot.state == READY_STATE and slot.alive:
                self._send(slot, signal.SIGHUP)
            elif slot.alive:
                slot.reload_pending = True

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.alive:
                self._send(slot, sig)

    def _send(self, slot: Slot, sig: signal.Signals) -> None:
        assert slot.proc is not None
        with contextlib.suppress(ProcessLookupError):
            slot.proc.send_signal(sig)

    @property
    def _drain_timeout(self) -> float:
        return self.config.server.drain_timeout

    async def _drain(self) -> None:
        """Every worker drains at once; the ones still running after drain_timeout plus
        the margin are killed."""
        self._stop.set()
        for slot in self.slots:
            if slot.alive:
                slot.state = DRAINING
                self._send(slot, signal.SIGTERM)
        # Each slot's keeper returns once its worker has exited, including a worker that
        # was being spawned just now (the keeper signals it when the spawn returns).
        keepers = asyncio.gather(*self._keepers, return_exceptions=True)
        limit = self._drain_timeout + self.timing.drain_margin
        try:
            await asyncio.wait_for(asyncio.shield(keepers), limit)
        except TimeoutError:
            stuck = [s for s in self.slots if s.alive]
            event(
                log,
                "worker.killed",
                f"{len(stuck)} worker(s) still running {limit:g}s after SIGTERM: killing them",
                level=logging.WARNING,
                workers=[s.index for s in stuck],
            )
            self._signal_all(signal.SIGKILL)
            await keepers

    # ------------------------------------------------------------------ one slot

    async def _keep(self, slot: Slot) -> None:
        """Run the slot's worker, and a new one each time it dies, until the pod stops."""
        while not self._stop.is_set():
            proc = await self._spawn(slot)
            if proc is not None and self._stop.is_set():  # the stop came during the spawn
                slot.state = DRAINING
                self._send(slot, signal.SIGTERM)
            watchdog = (
                asyncio.ensure_future(watch(slot, proc, self.timing, self._stop)) if proc else None
            )
            code = await proc.wait() if proc is not None else None
            slot.ready.clear()
            if watchdog is not None:
                watchdog.cancel()
            self.pod_metrics.retire(slot.index)
            if self._stop.is_set():
                return
            if not self.started_up:
                slot.log_death(code, "exited during startup; stopping", logging.ERROR)
                self._startup_failed.set()
                return
            reason = slot.death_reason(code)
            self.restarts[reason] += 1
            slot.restarts += 1
            delay = slot.backoff(self.timing)
            slot.state = BACKOFF
            slot.log_death(code, f"restarting in {delay:g}s", logging.WARNING, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _spawn(self, slot: Slot) -> asyncio.subprocess.Process | None:
        parent, child = socket.socketpair()
        fds = [s.fileno() for s in self._socks] if self.mode == SHARED else []
        link = WorkerLink(
            index=slot.index,
            control_fd=child.fileno(),
            status_path=slot.status_path,
            mode=self.mode,
            endpoints=tuple(endpoints(self._socks)),
            fds=tuple(fds),
            counters_path=self._counters_path,
        )
        slot.state = STARTING
        slot.ready.clear()
        slot.killed_unresponsive = False
        slot.started, slot.started_wall = time.monotonic(), time.time()
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "gateway",
                *self.argv,
                env={**os.environ, ENV: link.to_env()},
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(child.fileno(), *fds),
                start_new_session=True,
            )
        except OSError as exc:
            log.error("worker %d: cannot start %s: %s", slot.index, self.python, exc)
            parent.close()
            return None
        finally:
            child.close()
        slot.proc = proc
        task = asyncio.ensure_future(self._control(slot, proc, parent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return proc

    async def _control(
        self, slot: Slot, proc: asyncio.subprocess.Process, sock: socket.socket
    ) -> None:
        """Read the worker's control socket until it exits. Holding this end open is
        what keeps the worker from draining itself (child.py)."""
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            while line := await reader.readline():
                if line == READY and slot.proc is proc and not self._stop.is_set():
                    slot.state = READY_STATE
                    slot.ready.set()
                    event(
                        log,
                        "worker.ready",
                        f"worker {slot.index} (pid {proc.pid}) ready",
                        worker=slot.index,
                        pid=proc.pid,
                    )
                    if slot.reload_pending:
                        slot.reload_pending = False
                        self._send(slot, signal.SIGHUP)
        finally:
            writer.close()


def supervise(
    config: Config,
    argv: Sequence[str],
    count: int,
    *,
    host: str,
    port: int,
    status_host: str,
    status_port: int,
    watch: str | None = None,
) -> int:
    """Run the pod until it is stopped; the process exit code. The supervisor runs on
    the standard event loop: it serves no traffic, and asyncio's subprocess support is
    the reference one."""
    sup = Supervisor(
        config,
        argv,
        count,
        host=host,
        port=port,
        status_host=status_host,
        status_port=status_port,
        watch=watch,
    )
    return asyncio.run(sup.run())
