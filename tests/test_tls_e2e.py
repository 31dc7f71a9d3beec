"""https upstreams: the TLS handshake, certificate verification and keep-alive over TLS,
against a fake upstream serving a throwaway self-signed certificate on 127.0.0.1."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from helpers import route, target, url

from gateway.sim import FakeUpstream

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (CI installs it and fails on skips)")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(crt), "-subj", "/CN=llama-gateway test"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@pytest.fixture
async def tls_upstream(cert: tuple[Path, Path]) -> AsyncIterator[FakeUpstream]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    up = FakeUpstream("ollama")
    await up.start(ssl_context=ctx)
    yield up
    await up.stop()


async def test_https_upstream_trusted_via_ssl_cert_file(
    tls_upstream: FakeUpstream,
    cert: tuple[Path, Path],
    gateway,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A private CA (here the self-signed certificate itself) named by SSL_CERT_FILE is
    trusted; answers and streams come through, and the TLS connection is kept alive."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    assert tls_upstream.url().startswith("https://127.0.0.1:")
    gw = await gateway(route(target(tls_upstream, "/api/chat")))
    for _ in range(2):
        async with http.post(url(gw), json={"messages": CHAT}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["choices"][0]["message"]["role"] == "assistant"
    async with http.post(url(gw), json={"messages": CHAT, "stream": True}) as r:
        assert r.status == 200
        body = await r.read()
    assert body.rstrip().endswith(b"data: [DONE]")
    assert len(tls_upstream.generation_requests()) == 3
    pool = gw.gateway.pool  # type: ignore[union-attr]
    idle = [c for conns in pool._idle.values() for c in conns]
    assert len(idle) == 1 and idle[0].reused, "one TLS connection carried all three"


async def test_https_upstream_with_untrusted_certificate_is_502(
    tls_upstream: FakeUpstream, gateway, http: aiohttp.ClientSession
) -> None:
    """Verification is on: a certificate no trusted CA signed fails the handshake, which is
    a connect failure (502 naming the target), never a silent plain-text fallback."""
    gw = await gateway(route(target(tls_upstream, "/api/chat"), balancer={"retries": 0}))
    async with http.post(url(gw), json={"messages": CHAT}) as r:
        assert r.status == 502
        assert (await r.json())["error"]["message"] == (
            f"upstream unavailable: llama2@127.0.0.1:{tls_upstream.port}"
        )
    assert tls_upstream.generation_requests() == []
