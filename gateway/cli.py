"""`llama-gateway serve | check | demo`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from . import events, logs
from .config import Config, ConfigError, load_file
from .config._env import server_env, server_variables
from .workers.child import WorkerLink
from .workers.count import parse_workers, worker_count

ENV_CONFIG = "LLAMA_GATEWAY_CONFIG"
ENV_WATCH = "LLAMA_GATEWAY_WATCH_CONFIG"
log = logging.getLogger("llama_gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-gateway",
        description="Kong-compatible AI proxy for self-hosted Llama-family servers.",
    )
    p.add_argument("--log-level", help=f"DEBUG, INFO (default), … (also ${logs.ENV_LEVEL})")
    p.add_argument("--log-format", help=f"text (default) or json (also ${logs.ENV_FORMAT})")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help=f"YAML config file (default: ${ENV_CONFIG})")
    serve.add_argument("--host", help="proxy listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="proxy port (overrides server.port)")
    serve.add_argument("--status-host", help="status listen address (overrides server.status_host)")
    serve.add_argument("--status-port", type=int, help="status port (overrides server.status_port)")
    serve.add_argument(
        "--watch-config",
        action="store_true",
        default=os.environ.get(ENV_WATCH, "") not in ("", "0", "false", "no"),
        help=f"reload when the config file changes (also ${ENV_WATCH}=1); SIGHUP always does",
    )
    serve.add_argument(
        "--workers",
        type=parse_workers,
        help="proxy processes: a number, or auto (one per CPU); overrides server.workers",
    )

    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("--config", "-c", help=f"YAML config file (default: ${ENV_CONFIG})")

    demo = sub.add_parser("demo", help="run the gateway in front of three simulated upstreams")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--status-port", type=int, default=8100)
    return p


def _config_path(arg: str | None) -> str:
    path = arg or os.environ.get(ENV_CONFIG)
    if not path:
        raise SystemExit(f"llama-gateway: no config: pass --config FILE or set {ENV_CONFIG}")
    return path


def _load(path: str) -> Config | None:
    try:
        return load_file(path)
    except ConfigError as exc:
        print(f"{_shown(path)}: invalid configuration:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {_shown(line)}", file=sys.stderr)
        return None


def _shown(text: str) -> str:
    """`text` with control characters escaped: the validator quotes what it echoes,
    and this keeps a terminal safe from anything that slipped through (or a file name)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        logs.configure(*logs.resolve(args.log_format, args.log_level, os.environ))
    except logs.SettingError as exc:
        print(f"llama-gateway: {exc}", file=sys.stderr)
        return 1
    from .accesslog import configure as configure_access_log

    configure_access_log()
    if args.command == "check":
        path = _config_path(args.config)
        cfg = _load(path)
        if cfg is None:
            return 1
        n = sum(len(r.targets) for r in cfg.routes)
        names = server_variables()
        set_ = ", ".join(names[k] for k in server_env(os.environ))  # e.g. a Deployment's env
        env = f"; from the environment: {set_}" if set_ else ""
        guarded = sum(1 for r in cfg.routes if r.key_auth is not None)
        limited = sum(1 for r in cfg.routes if r.rate_limiting is not None)
        security = (
            f", {len(cfg.consumers)} consumer(s), key-auth on {guarded} route(s),"
            f" rate limits on {limited} route(s)"
            if cfg.consumers or guarded or limited
            else ""
        )
        print(f"{path}: OK ({len(cfg.routes)} route(s), {n} target(s){security}{env})")
        return 0
    if args.command == "serve":
        path = _config_path(args.config)
        cfg = _load(path)
        if cfg is None:
            return 1
        workers = _workers(args, cfg)
        if workers > 1:
            return _supervise(cfg, args, path, sys.argv[1:] if argv is None else argv, workers)
        return _run(_serve(cfg, args, path))
    from .demo import run_demo

    return _run(run_demo(args.port, args.status_port))


def _workers(args: argparse.Namespace, cfg: Config) -> int:
    """Processes to serve with; always 1 in a worker (it serves, the supervisor counts)."""
    if WorkerLink.from_env() is not None:
        return 1
    return worker_count(cfg.server.workers if args.workers is None else args.workers)


def _supervise(
    cfg: Config, args: argparse.Namespace, path: str, argv: Sequence[str], workers: int
) -> int:
    """`--workers N`: this process supervises N copies of itself (gateway/workers)."""
    from .workers.supervisor import supervise

    s = cfg.server
    return supervise(
        cfg,
        argv,
        workers,
        host=args.host or s.host,
        port=s.port if args.port is None else args.port,
        status_host=args.status_host or s.status_host,
        status_port=s.status_port if args.status_port is None else args.status_port,
        watch=path if args.watch_config else None,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (`pip install 'llama-gateway[uvloop]'`), unless
    LLAMA_GATEWAY_UVLOOP=0; the standard loop otherwise."""
    if os.environ.get("LLAMA_GATEWAY_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(main: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


async def _serve(cfg: Config, args: argparse.Namespace, path: str) -> int:
    from .reload import reload_from
    from .server import GatewayServer, run_until_signalled

    link = WorkerLink.from_env()  # set when a supervisor (--workers N) started this process
    server = GatewayServer(cfg, pod_counters=link.counters_path if link is not None else None)
    host = args.host
    if link is not None:
        logs.set_context(worker=link.index)  # every line says which worker wrote it
    try:
        if link is not None:
            await link.start(server)  # on the pod's sockets
        else:
            await server.start(host, args.port, args.status_host, args.status_port)
    except OSError as exc:
        events.listen_failed(str(exc))
        await server.stop()
        return 1

    def started() -> None:
        if link is not None:
            link.started()  # the supervisor announces the pod
            return
        s = cfg.server
        h, sh = host or s.host, args.status_host or s.status_host
        n = sum(len(r.targets) for r in cfg.routes)
        events.started(h, server.port, sh, server.status_port, len(cfg.routes), n)

    def reload() -> Awaitable[bool]:
        # `server.*` (the only part the environment and flags override) is kept from
        # startup on reload, so the file alone is the new config.
        return reload_from(server, lambda: load_file(path), path)

    # In a pod the supervisor watches the file and sends every worker SIGHUP.
    watch = path if args.watch_config and link is None else None
    await run_until_signalled(server, started, reload, watch=watch)
    events.stopped()
    return 0
