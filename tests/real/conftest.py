"""Fixtures for the `real_upstream` tests: a tiny model written once per session and
real llama.cpp servers on free loopback ports (skipped, with the reason, when the
servers are not installed — `.ci/real-upstreams.sh` installs them)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import servers
from servers import HeldModel, RealServer
from tap import Tap


@pytest.fixture(scope="session")
def real_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-upstreams")


@pytest.fixture(scope="session")
def tiny_model(real_workdir: Path) -> Path:
    if importlib.util.find_spec("gguf") is None:
        pytest.skip(f"the gguf package is not installed: {servers.INSTALL_HINT}")
    import tinymodel

    return tinymodel.write_model(real_workdir / "tiny-llama2.gguf")


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    binary, why = servers.llama_server_binary()
    if binary is None:
        pytest.skip(why)
    return binary


@pytest.fixture(scope="session")
def llama_server(
    llama_server_bin: Path, tiny_model: Path, real_workdir: Path
) -> Iterator[RealServer]:
    """The session's native llama-server (never killed by a test)."""
    server = servers.llama_server(llama_server_bin, tiny_model, real_workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_cpp_python(tiny_model: Path, real_workdir: Path) -> Iterator[RealServer]:
    """The session's `python -m llama_cpp.server`."""
    why = servers.llama_cpp_python_missing()
    if why:
        pytest.skip(why)
    server = servers.llama_cpp_python(tiny_model, real_workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_server_embeddings(
    llama_server_bin: Path, tiny_model: Path, real_workdir: Path
) -> Iterator[RealServer]:
    """A native llama-server on the session's model with embeddings on, mean pooling."""
    server = servers.llama_server(
        llama_server_bin, tiny_model, real_workdir, *servers.EMBEDDING_FLAGS
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pooled_tiny_model(tiny_model: Path, real_workdir: Path) -> Path:
    """The session's model declaring mean pooling (for llama-cpp-python's embeddings)."""
    return servers.with_pooling(tiny_model, real_workdir / "tiny-llama2-mean.gguf")


@pytest.fixture(scope="session")
def llama_cpp_python_embeddings(
    pooled_tiny_model: Path, real_workdir: Path
) -> Iterator[RealServer]:
    """`python -m llama_cpp.server --embedding true` on the pooled model."""
    why = servers.llama_cpp_python_missing()
    if why:
        pytest.skip(why)
    server = servers.llama_cpp_python(
        pooled_tiny_model, real_workdir, "--embedding", "true"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def spare_llama_server(
    llama_server_bin: Path, tiny_model: Path, real_workdir: Path
) -> Iterator[Callable[..., RealServer]]:
    """Factory of extra native servers a test may kill or start late (not started;
    `model` overrides the session's); all are stopped after the test."""
    made: list[RealServer] = []

    def make(model: Path | None = None) -> RealServer:
        server = servers.llama_server(llama_server_bin, model or tiny_model, real_workdir)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def held_model(tiny_model: Path, tmp_path: Path) -> Iterator[HeldModel]:
    """A copy of the model that a server cannot open until the test releases it."""
    try:
        held = HeldModel(tiny_model, tmp_path / "held.gguf")
    except OSError as exc:
        pytest.skip(f"file leases are not available here ({exc}); cannot hold a model load")
    yield held
    held.release()


@pytest.fixture
async def tap() -> AsyncIterator[Callable[[RealServer], Awaitable[Tap]]]:
    """Factory of recording pass-throughs in front of a real server."""
    made: list[Tap] = []

    async def make(server: RealServer) -> Tap:
        t = await Tap(server.url()).start()
        made.append(t)
        return t

    yield make
    for t in made:
        await t.stop()
