"""Discovery: models, busy slots, queue and slot count read from real (fake) servers on
127.0.0.1 and written to the targets' states; the staleness rule; the pure readers.

Most tests step polls by hand (`Discovery.poll()`) under a clock the test moves, so
what each poll sees and writes is exact; the loop itself is checked by counting what
the server received. Nothing asserts timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from discovery_kit import (
    NOT_SUPPORTED,
    SECRET,
    Lab,
    metrics,
    ollama_ps,
    ollama_tags,
    openai_models,
    props,
    slots,
    state,
)
from helpers import until

from balancers import TargetState
from gateway.config import parse
from gateway.discovery import (
    Discovery,
    build_discovery,
    fresh_busy,
    fresh_deferred,
    model_choice,
    server_spec,
)
from gateway.discovery import parse as answers
from gateway.health import ProbeSpec
from gateway.routing import build_route
from gateway.sim.base import Behaviour


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    started = Lab()
    yield started
    await started.close()


def spec(srv: Any, *headers: tuple[str, str], query: str = "") -> ProbeSpec:
    return ProbeSpec(srv.url("/" + query), headers)


LLAMA = {
    "/props": props(4),
    "/slots": slots(True, False, True, False),
    "/metrics": metrics(processing=2, deferred=3),
}


# -- what each kind of server reports --------------------------------------------------


async def test_ollama_models_installed_and_loaded(lab) -> None:
    srv = await lab.server(
        {"/api/tags": ollama_tags("llama2:latest", "mistral:7b"), "/api/ps": ollama_ps("llama2:latest")}
    )  # fmt: skip
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "ollama", st)
    await d.poll()
    # `llama2` is what a client names `llama2:latest` by
    assert st.models_installed == {"llama2:latest", "llama2", "mistral:7b"}
    assert st.models_loaded == {"llama2:latest", "llama2"}
    assert st.busy_reported is None and st.deferred_reported is None  # Ollama says no load
    assert st.signals_at == lab.clock.now
    assert srv.count("/api/tags") == srv.count("/api/ps") == 1
    (snap,) = d.snapshot()
    assert snap["models_installed"] == ["llama2:latest", "mistral:7b"]  # as the server names them
    assert snap["models_loaded"] == ["llama2:latest"]
    assert snap["last_error"] is None and snap["polls"] == 1


async def test_openai_models_installed_loaded_unknown(lab) -> None:
    srv = await lab.server({"/v1/models": openai_models("gpt-4o-mini", "Qwen/Qwen2.5-7B")})
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "openai", st)
    await d.poll()
    assert st.models_installed == {"gpt-4o-mini", "Qwen/Qwen2.5-7B"}
    assert st.models_loaded is None
    assert st.busy_reported is None
    assert [p for p, _ in srv.requests] == ["/v1/models"]  # nothing llama.cpp asked


async def test_llamacpp_busy_slots_deferred_and_auto_capacity(lab) -> None:
    srv = await lab.server(LLAMA)
    auto, fixed = state("auto"), state("fixed", capacity=8)
    d = lab.discovery()
    d.add(spec(srv), "llamacpp", auto, auto_capacity=True)
    d.add(spec(srv), "llamacpp", fixed)
    await d.poll()
    for st in (auto, fixed):
        assert st.busy_reported == 2  # two slots `is_processing`
        assert st.deferred_reported == 3
        assert st.signals_at == lab.clock.now
        assert st.models_installed is None  # a native request names no model
    assert auto.capacity == 4  # one per slot
    assert fixed.capacity == 8  # config's number: not discovery's to change
    assert [p for p, _ in srv.requests] == ["/props", "/slots", "/metrics"]
    (snap,) = d.snapshot()
    assert (snap["busy"], snap["deferred"], snap["slots"], snap["sleeping"]) == (2, 3, 4, False)
    assert snap["llama_server"] is True


async def test_slots_disabled_falls_back_to_props_and_metrics(lab, caplog) -> None:
    # llama-server --no-slots: 501 on /slots; --metrics on.
    srv = await lab.server({**LLAMA, "/slots": NOT_SUPPORTED, "/props": props(6)})
    st = state()
    d = lab.discovery(off_retry=60.0)
    d.add(spec(srv), "llamacpp", st, auto_capacity=True)
    with caplog.at_level(logging.INFO, logger="llama_gateway.discovery"):
        await d.poll()
        await d.poll()
    assert st.capacity == 6  # /props total_slots
    assert st.busy_reported == 2  # llamacpp:requests_processing
    assert st.deferred_reported == 3
    assert srv.count("/slots") == 1  # off: not asked again for a while
    assert d.snapshot()[0]["off"] == ["/slots"]
    assert d.snapshot()[0]["last_error"] is None  # off is not a failure
    off_logs = [r for r in caplog.records if "does not serve /slots" in r.getMessage()]
    assert len(off_logs) == 1 and off_logs[0].levelno == logging.INFO
    # a while later it is asked again; once it answers, busy comes from the slots
    srv.answers["/slots"] = slots(True, True, True, False, False, False)
    lab.clock.now += 61
    await d.poll()
    assert srv.count("/slots") == 2
    assert st.busy_reported == 3 and d.snapshot()[0]["off"] == []


async def test_metrics_off_leaves_deferred_unknown(lab) -> None:
    srv = await lab.server({**LLAMA, "/metrics": NOT_SUPPORTED})
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "llamacpp", st)
    for _ in range(3):
        await d.poll()
    assert st.busy_reported == 2 and st.deferred_reported is None
    assert srv.count("/metrics") == 1 and srv.count("/slots") == 3


async def test_endpoints_props_says_are_off_are_not_asked(lab) -> None:
    srv = await lab.server(
        {**LLAMA, "/props": props(3, endpoint_slots=False, endpoint_metrics=True)}
    )
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "llamacpp", st, auto_capacity=True)
    await d.poll()
    assert srv.count("/slots") == 0
    assert st.busy_reported == 2 and st.capacity == 3


async def test_a_sleeping_server_is_not_woken(lab) -> None:
    # GET /slots queues a task on llama-server, which would wake it and load the model.
    srv = await lab.server({**LLAMA, "/props": props(4, sleeping=True)})
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "llamacpp", st, auto_capacity=True)
    await d.poll()
    assert [p for p, _ in srv.requests] == ["/props"]
    assert (st.busy_reported, st.deferred_reported, st.capacity) == (0, 0, 4)
    assert d.snapshot()[0]["sleeping"] is True


async def test_older_slots_shape_counts_state(lab) -> None:
    # Servers before `is_processing`: state 0 idle, 1 processing; no /props total.
    older = [{"id": 0, "state": 1}, {"id": 1, "state": 0}, {"id": 2, "state": 1}]
    srv = await lab.server({"/slots": older, "/metrics": metrics(2, 0)})
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "llamacpp", st, auto_capacity=True)
    await d.poll()
    assert st.busy_reported == 2 and st.capacity == 3


async def test_an_openai_target_on_llama_server_reads_its_load(lab) -> None:
    srv = await lab.server({**LLAMA, "/v1/models": openai_models("/m/q.gguf", owned_by="llamacpp")})
    st = state()
    d = lab.discovery()
    d.add(spec(srv), "openai", st)
    await d.poll()
    # it answers to any model name: its one id must not filter requests
    assert st.models_installed is None
    assert st.busy_reported == 2 and st.deferred_reported == 3
    assert d.snapshot()[0]["llama_server"] is True


# -- sharing, credentials, the loop ----------------------------------------------------


async def test_one_poll_per_server_shared_by_its_targets(lab) -> None:
    srv = await lab.server({"/api/tags": ollama_tags("a:latest"), "/api/ps": ollama_ps()})
    states = [state(n) for n in "abc"]
    d = lab.discovery()
    d.add(spec(srv), "ollama", states[0])
    d.add(spec(srv), "ollama", states[1])
    d.add(spec(srv), "openai", states[2])  # Ollama's /v1 on the same server
    for _ in range(3):
        await d.poll()
    assert srv.count("/api/tags") == srv.count("/api/ps") == 3
    assert srv.count("/v1/models") == 0  # the Ollama listing serves the openai target too
    assert all(s.models_installed == {"a:latest", "a"} for s in states)
    assert all(s.models_loaded == frozenset() for s in states)
    (snap,) = d.snapshot()
    assert snap["targets"] == ["a", "b", "c"] and snap["kinds"] == ["ollama", "openai"]


async def test_different_credentials_are_different_servers(lab) -> None:
    srv = await lab.server({"/v1/models": openai_models("m")})
    d = lab.discovery()
    d.add(spec(srv, ("Authorization", "Bearer k1")), "openai", state("a"))
    d.add(spec(srv, ("authorization", "Bearer k1")), "openai", state("b"))  # same
    d.add(spec(srv, ("Authorization", "Bearer k2")), "openai", state("c"))
    await d.poll()
    assert len(d.snapshot()) == 2 and srv.count("/v1/models") == 2


async def test_the_loop_polls_each_server_once_per_interval(lab) -> None:
    one = await lab.server({"/api/tags": ollama_tags("a:latest"), "/api/ps": ollama_ps()})
    two = await lab.server(LLAMA)
    d = lab.discovery(interval=0.01)
    d.add(spec(one), "ollama", state("a"))
    d.add(spec(one), "ollama", state("b"))
    d.add(spec(two), "llamacpp", state("c"))
    await d.start()
    await until(lambda: all(s["polls"] >= 3 for s in d.snapshot()))
    assert all(s["polling"] for s in d.snapshot())
    await d.stop()
    snaps = {s["targets"][0]: s for s in d.snapshot()}
    # one GET per endpoint per poll, whatever the number of targets (the last poll may
    # have been cut short by stop())
    assert snaps["a"]["polls"] <= one.count("/api/tags") <= snaps["a"]["polls"] + 1
    assert snaps["c"]["polls"] <= two.count("/slots") <= snaps["c"]["polls"] + 1
    assert not any(s["polling"] for s in d.snapshot())


async def test_credentials_are_sent_and_never_shown(lab, caplog) -> None:
    srv = await lab.server({"/props": (500, {}), "/slots": slots(False)})
    cfg = parse(
        {
            "routes": [
                {
                    "name": "r",
                    "paths": ["/chat"],
                    "plugin": "ai-proxy-advanced",
                    "config": {
                        "targets": [
                            _target(srv.url("/completion"), "raw",
                                    auth={"header_name": "Authorization",
                                          "header_value": f"Bearer {SECRET}",
                                          "param_name": "key", "param_value": SECRET,
                                          "param_location": "query"},
                                    options={"raw_flavor": "llamacpp"})
                        ]
                    },
                }
            ]
        },
        {},
    )  # fmt: skip
    route = build_route(cfg.routes[0], lab.clock)
    t = route.targets[0]
    d = lab.discovery()
    d.add(server_spec(t.cfg), "llamacpp", t.state)
    with caplog.at_level(logging.DEBUG, logger="llama_gateway.discovery"):
        await d.poll()
    path, headers = srv.requests[0]
    assert path == f"/props?key={SECRET}"
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["Connection"] == "close" and "discovery" in headers["User-Agent"]
    snap = d.snapshot()
    assert snap[0]["last_error"] == "/props: HTTP 500"
    assert SECRET not in repr(snap) and SECRET not in repr(d) and SECRET not in caplog.text
    assert "key=***" in snap[0]["url"]


async def test_stop_cancels_a_poll_in_progress(lab) -> None:
    srv = await lab.server({"/api/tags": "hang"})
    st = state()
    d = lab.discovery(interval=3600)
    d.add(spec(srv), "ollama", st)
    await d.start()
    await until(lambda: srv.count("/api/tags") == 1)
    await d.stop()  # returns: the hanging GET is cancelled, the pool closed
    (snap,) = d.snapshot()
    assert snap["polling"] is False and snap["polls"] == 0
    assert st.models_installed is None
    await d.stop()  # idempotent


async def test_add_after_start_is_refused(lab) -> None:
    srv = await lab.server({})
    d = lab.discovery(interval=3600)
    d.add(spec(srv), "ollama", state("a"))
    await d.start()
    with pytest.raises(RuntimeError):
        d.add(spec(srv), "ollama", state("b"))


# -- failures and staleness ------------------------------------------------------------


async def test_failures_keep_values_then_expire(lab, caplog) -> None:
    srv = await lab.server({**LLAMA, "/v1/models": openai_models("/m.gguf", owned_by="llamacpp")})
    st = state()
    d = lab.discovery(interval=5.0)  # max_age 15 s on the test's clock
    d.add(spec(srv), "llamacpp", st, auto_capacity=True)
    await d.poll()
    read_at = lab.clock.now
    srv.answers = {p: (500, {"error": "boom"}) for p in ("/props", "/slots", "/metrics")}
    with caplog.at_level(logging.DEBUG, logger="llama_gateway.discovery"):
        for _ in range(3):  # within max_age: last values kept
            lab.clock.now += 5
            await d.poll()
            assert (st.busy_reported, st.deferred_reported) == (2, 3)
            assert st.signals_at == read_at
        lab.clock.now += 0.5  # now 15.5 s since the read
        await d.poll()
        assert (st.busy_reported, st.deferred_reported) == (None, None)
        assert st.capacity == 4  # a launch setting, kept while the server is away
        lab.clock.now += 5
        await d.poll()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # once when it started failing, once when its values expired; polls: DEBUG only
    assert len(warnings) == 2
    assert "/props: HTTP 500" in warnings[0] and "now unknown" in warnings[1]
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if "polled" in r.getMessage())
    # it answers again: values back, INFO once
    srv.answers = dict(LLAMA)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llama_gateway.discovery"):
        await d.poll()
    assert st.busy_reported == 2 and st.signals_at == lab.clock.now
    assert [r.levelno for r in caplog.records] == [logging.INFO]


@pytest.mark.parametrize(
    "bad",
    [b"{not json", b"[1, 2]", b'{"models": "nope"}', (200, "plain text, not JSON")],
    ids=["syntax", "list", "shape", "text"],
)
async def test_malformed_answers_keep_values_then_expire(lab, bad) -> None:
    srv = await lab.server({"/api/tags": ollama_tags("a:latest"), "/api/ps": ollama_ps("a:latest")})
    st = state()
    d = lab.discovery(interval=5.0)
    d.add(spec(srv), "ollama", st)
    await d.poll()
    srv.answers["/api/tags"] = bad
    lab.clock.now += 10
    await d.poll()
    assert st.models_installed == {"a:latest", "a"}  # kept
    assert d.snapshot()[0]["last_error"] == "/api/tags: malformed answer"
    lab.clock.now += 6  # 16 s since /api/tags was last read
    await d.poll()
    assert st.models_installed is None  # unknown: any model may be there
    assert st.models_loaded == {"a:latest", "a"}  # /api/ps still answers


async def test_timeouts_and_refusals_fail_the_read_only(lab) -> None:
    srv = await lab.server({**LLAMA, "/metrics": "hang"})
    st = state()
    d = lab.discovery(timeout=0.2)
    d.add(spec(srv), "llamacpp", st)
    await d.poll()
    assert st.busy_reported == 2 and st.deferred_reported is None
    assert d.snapshot()[0]["last_error"] == "/metrics: timeout"
    gone = await lab.server({})
    port = gone.port
    await gone.stop()
    d2 = lab.discovery()
    d2.add(ProbeSpec(f"http://127.0.0.1:{port}/"), "openai", state())
    await d2.poll()
    assert d2.snapshot()[0]["last_error"] == "/v1/models: connection refused or unreachable"


async def test_a_body_over_the_limit_is_a_failure(lab) -> None:
    srv = await lab.server({"/v1/models": openai_models(*(f"model-{i}" for i in range(500)))})
    st = state()
    d = lab.discovery(max_body=4096)
    d.add(spec(srv), "openai", st)
    await d.poll()
    assert st.models_installed is None
    assert d.snapshot()[0]["last_error"] == "/v1/models: response body too large"


# -- built from the config -------------------------------------------------------------


def _target(url: str, fmt: str, **extra: Any) -> dict[str, Any]:
    options = {"llama2_format": fmt, "upstream_url": url, **extra.pop("options", {})}
    return {"route_type": "llm/v1/chat", "model": {"provider": "llama2", "options": options}, **extra}  # fmt: skip


def test_build_discovery_groups_targets_by_server() -> None:
    host = "http://10.0.0.1:8080"
    llamacpp = {"raw_flavor": "llamacpp"}
    raw = {
        "routes": [
            {
                "name": "r",
                "paths": ["/chat"],
                "plugin": "ai-proxy-advanced",
                "config": {
                    "targets": [
                        _target(
                            f"{host}/completion", "raw", options=llamacpp, max_concurrency="auto"
                        ),
                        _target(f"{host}/v1/chat/completions", "openai", max_concurrency=4),
                        _target("http://10.0.0.2:11434/api/chat", "ollama"),
                        _target("http://10.0.0.3:80/generate", "raw"),  # TGI: nothing read
                    ]
                },
            }
        ]
    }
    route = build_route(parse(raw, {}).routes[0], lambda: 0.0)
    d = build_discovery([route])
    assert d is not None
    snaps = {s["url"]: s for s in d.snapshot()}
    assert set(snaps) == {f"{host}/", "http://10.0.0.2:11434/"}
    assert snaps[f"{host}/"]["kinds"] == ["llamacpp", "openai"]
    assert len(snaps[f"{host}/"]["targets"]) == 2
    assert d.server_of(route.targets[3].state) is None
    assert d.interval == 5.0 and d.max_age == 15.0
    assert d.max_age == route.balancer.options.signal_max_age  # readers and writer agree
    only_tgi = {**raw["routes"][0], "config": {"targets": [_target("http://h:80/generate", "raw")]}}
    tgi_route = build_route(parse({"routes": [only_tgi]}, {}).routes[0], lambda: 0.0)
    assert build_discovery([tgi_route]) is None


async def test_auto_capacity_from_the_config(lab) -> None:
    srv = await lab.server(LLAMA)
    llamacpp = {"raw_flavor": "llamacpp"}
    raw = {
        "name": "r",
        "paths": ["/chat"],
        "plugin": "ai-proxy-advanced",
        "config": {
            "targets": [
                _target(srv.url("/completion"), "raw", options=llamacpp, max_concurrency="auto"),
                _target(srv.url("/completion"), "raw", options=llamacpp, max_concurrency=7),
            ]
        },
    }
    route = build_route(parse({"routes": [raw]}, {}).routes[0], lab.clock)
    auto, fixed = (t.state for t in route.targets)
    assert (auto.capacity, fixed.capacity) == (1, 7)  # auto: one slot until read
    d = build_discovery([route], clock=lab.clock)
    assert d is not None
    lab.discoveries.append(d)
    await d.poll()
    assert (auto.capacity, fixed.capacity) == (4, 7)
    assert srv.count("/slots") == 1  # one server, one poll


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Discovery(interval=0)


# -- the pure readers ------------------------------------------------------------------


def _st(
    name: str, installed: set[str] | None = None, loaded: set[str] | None = None
) -> TargetState:
    s = state(name)
    s.models_installed = frozenset(installed) if installed is not None else None
    s.models_loaded = frozenset(loaded) if loaded is not None else None
    return s


def test_fresh_busy_is_unknown_once_old() -> None:
    s = state()
    assert fresh_busy(s, 100.0, 15.0) is None  # never read
    s.busy_reported, s.deferred_reported, s.signals_at = 3, 1, 100.0
    assert fresh_busy(s, 115.0, 15.0) == 3 and fresh_deferred(s, 115.0, 15.0) == 1
    assert fresh_busy(s, 115.1, 15.0) is None and fresh_deferred(s, 115.1, 15.0) is None
    s.busy_reported = 0
    assert fresh_busy(s, 101.0, 15.0) == 0  # zero is a reading, not unknown


def test_model_choice_filters_and_puts_loaded_first() -> None:
    a = _st("a", {"llama2:latest", "llama2"}, set())
    b = _st("b")  # not discovered: may have anything
    c = _st("c", {"mistral:7b"}, {"mistral:7b"})
    d = _st("d", {"llama2:latest", "llama2"}, {"llama2:latest", "llama2"})
    choice = model_choice([a, b, c, d], "llama2")
    assert [s.name for s in choice.candidates] == ["d", "a", "b"]
    assert [s.name for s in choice.loaded] == ["d"]
    none = model_choice([a, c, d], "phi3")
    assert none.candidates == [] and none.loaded == []
    assert none.available == ["llama2:latest", "mistral:7b"]
    assert none.not_available("phi3") == (
        "model 'phi3' is not available; available: llama2:latest, mistral:7b"
    )
    assert model_choice([], "x").not_available("x") == "model 'x' is not available; available: none"


def test_parsers() -> None:
    assert answers.model_names(["a:latest", "b:7b", ":latest"]) == {
        "a:latest",
        "a",
        "b:7b",
        ":latest",
    }
    with_labels = b'llamacpp:requests_processing{model="m"} 4\nllamacpp:requests_deferred 1.0\n'
    assert answers.llamacpp_metrics(with_labels) == answers.Metrics(4, 1)
    assert answers.llamacpp_metrics(b"# nothing of ours\n") == answers.Metrics(None, None)
    for bad in (b"llamacpp:requests_processing NaN\n", b"llamacpp:requests_deferred x\n",
                b"llamacpp:requests_processing -1\n"):  # fmt: skip
        with pytest.raises(ValueError):
            answers.llamacpp_metrics(bad)
    with pytest.raises(ValueError):
        answers.llamacpp_slots(b'[{"id": 0}]')
    p = answers.llamacpp_props(b'{"total_slots": true}')
    assert p.total_slots is None and p.sleeping is False and p.slots_endpoint is None
    router = answers.openai_models(
        b'{"data": [{"id": "a", "owned_by": "llamacpp", "status": {"value": "loaded"}},'
        b' {"id": "b", "owned_by": "llamacpp", "status": {"value": "unloaded"}}]}'
    )
    assert router.ids == {"a", "b"} and router.loaded == {"a"} and not router.llama_server


# -- against the project's simulated servers -------------------------------------------


async def test_simulated_llama_server_busy_and_deferred(lab, upstream, http) -> None:
    up = await upstream("llamacpp", slots=2, behaviour=Behaviour(stall_after=1))
    st = state()
    d = lab.discovery()
    d.add(ProbeSpec(up.url("/")), "llamacpp", st, auto_capacity=True)
    await d.poll()
    assert (st.busy_reported, st.deferred_reported, st.capacity) == (0, 0, 2)

    async def hold() -> None:  # a stream that stalls after its first token
        async with http.post(up.url("/completion"), json={"prompt": "hi", "stream": True}) as r:
            await r.read()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    try:
        await until(lambda: up.busy == 2 and up.waiting == 1)
        await d.poll()
        assert (st.busy_reported, st.deferred_reported) == (2, 1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_simulated_ollama_models(lab, upstream) -> None:
    up = await upstream("ollama", models=("llama2", "mistral:7b"), loaded=("mistral:7b",))
    st = state()
    d = lab.discovery()
    d.add(ProbeSpec(up.url("/")), "ollama", st)
    await d.poll()
    assert st.models_installed == {"llama2:latest", "llama2", "mistral:7b"}
    assert st.models_loaded == {"mistral:7b"}
    choice = model_choice([st], "llama2")
    assert choice.candidates == [st] and choice.loaded == []


async def test_simulated_llama_server_behind_an_openai_target(lab, upstream) -> None:
    up = await upstream("llamacpp", slots=3, api_key=SECRET)
    st = state()
    d = lab.discovery()
    d.add(ProbeSpec(up.url("/"), (("Authorization", f"Bearer {SECRET}"),)), "openai", st)
    await d.poll()
    assert st.models_installed is None  # serves its one model under any name
    assert st.busy_reported == 0 and d.snapshot()[0]["slots"] == 3
    assert d.snapshot()[0]["last_error"] is None  # the key was accepted on /slots


async def test_metrics_only_as_a_fallback_when_deferred_is_not_wanted(lab) -> None:
    # Each /metrics GET restarts llama-server's throughput-gauge window.
    srv = await lab.server(LLAMA)
    st = state()
    d = lab.discovery(read_deferred=False, off_retry=60.0)
    d.add(spec(srv), "llamacpp", st)
    await d.poll()
    assert srv.count("/metrics") == 0
    assert st.busy_reported == 2 and st.deferred_reported is None
    srv.answers["/slots"] = NOT_SUPPORTED  # --no-slots: busy only from /metrics now
    lab.clock.now += 5
    await d.poll()
    assert srv.count("/metrics") == 1 and st.busy_reported == 2
