"""Model discovery steering real requests: a target without `model.name` passes the
client's model, so only servers that have it get it, those with it loaded first; an
unknown model is a 404 listing what exists. `least-busy` follows server-reported slots."""

from __future__ import annotations

from typing import Any

from helpers import target, until, url

CHAT = [{"role": "user", "content": "hi"}]


def discovered_route(*targets: dict[str, Any], **balancer: Any) -> dict[str, Any]:
    """A route with health checks on (discovery goes with them)."""
    return {
        "name": "r",
        "paths": ["/chat"],
        "config": {"targets": list(targets), "balancer": balancer},
    }


async def test_routes_by_installed_and_prefers_loaded(upstream, gateway, http) -> None:
    a = await upstream("ollama", models=["llama2:latest", "mistral:7b"], loaded=["mistral:7b"])
    b = await upstream("ollama", models=["llama2:latest"], loaded=["llama2:latest"])
    gw = await gateway(
        discovered_route(target(a, "/api/chat", name=None), target(b, "/api/chat", name=None))
    )
    states = [t.state for t in gw.router.routes[0].targets]
    await until(lambda: all(s.models_loaded is not None for s in states))
    for model, expect in (("mistral:7b", a), ("llama2", b), ("llama2", b), ("llama2", b)):
        async with http.post(url(gw), json={"model": model, "messages": CHAT}) as r:
            assert r.status == 200, await r.text()
            assert (
                r.headers["X-Gateway-Target"]
                == gw.router.routes[0].targets[0 if expect is a else 1].name
            )
    async with http.post(url(gw), json={"model": "phi3", "messages": CHAT}) as r:
        assert r.status == 404
        assert (await r.json())["error"]["message"] == (
            "model 'phi3' is not available; available: llama2:latest, mistral:7b"
        )
    status = await (await http.get(f"http://127.0.0.1:{gw.status_port}/status")).json()
    t0 = status["routes"][0]["targets"][0]
    assert t0["models_installed"] == ["llama2:latest", "mistral:7b"]
    assert t0["discovery"]["polls"] >= 1


async def test_least_busy_follows_server_reported_slots(upstream, gateway, http) -> None:
    """Another client keeps llama-server A busy: least-busy sends ours to B."""
    a = await upstream("llamacpp", slots=2)
    b = await upstream("llamacpp", slots=2)
    gw = await gateway(
        discovered_route(
            target(
                a,
                "/completion",
                fmt="raw",
                options={"raw_flavor": "llamacpp"},
                max_concurrency="auto",
            ),
            target(
                b,
                "/completion",
                fmt="raw",
                options={"raw_flavor": "llamacpp"},
                max_concurrency="auto",
            ),
            algorithm="least-busy",
        )
    )
    states = [t.state for t in gw.router.routes[0].targets]
    await until(lambda: all(s.capacity == 2 for s in states))
    # Pretend discovery just read "A has both slots busy" (what another client causes).
    now = gw.clock()
    states[0].busy_reported, states[0].signals_at = 2, now
    states[1].busy_reported, states[1].signals_at = 0, now
    for _ in range(3):
        async with http.post(url(gw), json={"messages": CHAT, "max_tokens": 4}) as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Gateway-Target"] == gw.router.routes[0].targets[1].name
    assert states[0].requests == 0
