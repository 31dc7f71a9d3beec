"""What llama-server tells about itself: its slots (`Slot`, and `Binder`, which ties a
generation to the slot it gets), how it was started for embeddings, and the
informational GETs that show it all (`/health`, `/slots`, `/props`, `/metrics`).

Together because the GETs are views of this state: the gateway's discovery poller reads
them to learn a server's capacity and load, so they must agree with what runs.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.sim.base import Core
from gateway.sim.llamacpp.errors import JSON_TYPE, unavailable
from gateway.sim.tokens import Plan
from gateway.sim.wire import json_response

_N_CTX = 4096
FINGERPRINT = "b0-unknown"  # a build without version information
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] }}"
    "{% endfor %}"
)


def server_model(core: Core) -> str:
    """The model llama-server names in its answers (its model path or alias), whatever
    the request says."""
    return core.models[0] if core.models else "model.gguf"


def generation_settings(body: dict[str, Any], n_predict: Any, stops: list[str]) -> dict[str, Any]:
    return {
        "n_predict": n_predict if isinstance(n_predict, int) else -1,
        "seed": 4294967295,
        "temperature": body.get("temperature", 0.8),
        "top_k": body.get("top_k", 40),
        "top_p": body.get("top_p", 0.95),
        "min_p": 0.05,
        "stop": stops,
        "stream": body.get("stream") is True,
        "cache_prompt": body.get("cache_prompt", True),
    }


class Slot:
    """One llama-server slot as `/slots` shows it: a never-used slot only says what it
    is; after a first task it also tells the last (or current) task."""

    def __init__(self, id_: int = 0) -> None:
        self.id = id_
        self.tasks = 0
        self.task: dict[str, Any] | None = None
        self.n_predict = -1
        self.decoded = 0

    def begin(self, plan: Plan, params: dict[str, Any]) -> None:
        self.tasks += 1
        self.n_predict = params["n_predict"]
        self.decoded = 0
        self.task = {
            "id_task": self.tasks,
            "n_prompt_tokens": plan.prompt_tokens,
            "n_prompt_tokens_cache": 0,
            "params": params,
        }

    def view(self, busy: bool) -> dict[str, Any]:
        slot: dict[str, Any] = {
            "id": self.id,
            "n_ctx": _N_CTX,
            "speculative": False,
            "is_processing": busy,
        }
        if self.task is None:
            return slot
        remain = self.n_predict - self.decoded if busy and self.n_predict >= 0 else -1
        return {
            **slot,
            **self.task,
            "n_prompt_tokens_processed": self.task["n_prompt_tokens"] if busy else 0,
            "next_token": [
                {
                    "has_next_token": busy,
                    "has_new_line": False,
                    "n_remain": remain,
                    "n_decoded": self.decoded if busy else 0,
                }
            ],
        }


class Binder:
    """Ties a generation to the slot it is given once its wait is over (`bind` is the
    core's `on_slot`); until then the reply has no slot to report its progress to."""

    def __init__(self, slots: list[Slot], settings: dict[str, Any]) -> None:
        self.slots = slots
        self.settings = settings
        self.plan: Plan | None = None
        self.slot: Slot | None = None

    def bind(self, slot_id: int) -> None:
        self.slot = self.slots[slot_id]
        if self.plan is not None:
            self.slot.begin(self.plan, self.settings)

    def decoded(self, n: int) -> None:
        if self.slot is not None:
            self.slot.decoded = n

    @property
    def id_slot(self) -> int:
        return self.slot.id if self.slot is not None else -1


class Embeddings:
    """How the server was started for embeddings; a test flips these. `enabled`:
    `--embeddings` given (otherwise every embeddings endpoint is 501). `pooling`: the
    `--pooling` type; "none" answers one vector per token natively and refuses /v1."""

    def __init__(self) -> None:
        self.enabled = True
        self.pooling = "mean"


class Status:
    """The informational GETs, answered from the core's pool and the slots' tasks."""

    def __init__(self, core: Core, slots: list[Slot]) -> None:
        self.core = core
        self.slots = slots

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/v1/health", self.health),
            web.get("/slots", self.slot_list),
            web.get("/props", self.props),
            web.get("/metrics", self.metrics),
        ]

    async def health(self, request: web.Request) -> web.Response:
        return unavailable(self.core) or json_response({"status": "ok"}, 200, JSON_TYPE)

    def _busy(self, slot: Slot) -> bool:
        pool = self.core.pool
        return slot.id in pool.busy_ids if pool.size is not None else pool.active > 0

    async def slot_list(self, request: web.Request) -> web.Response:
        return json_response([slot.view(self._busy(slot)) for slot in self.slots], 200, JSON_TYPE)

    async def props(self, request: web.Request) -> web.Response:
        model = server_model(self.core)
        return json_response(
            {
                "default_generation_settings": {
                    "params": generation_settings({}, -1, []),
                    "n_ctx": _N_CTX,
                },
                "total_slots": len(self.slots),
                "model_alias": model,
                "model_path": model,
                "modalities": {"vision": False, "audio": False},
                "endpoint_slots": True,
                "endpoint_props": True,
                "endpoint_metrics": True,
                "is_sleeping": False,
                "chat_template": _CHAT_TEMPLATE,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "build_info": FINGERPRINT,
            },
            200,
            JSON_TYPE,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        core = self.core
        series = [
            (
                "prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                core.prompt_tokens_total,
            ),
            (
                "tokens_predicted_total",
                "counter",
                "Number of generation tokens processed.",
                core.predicted_tokens_total,
            ),
            ("requests_processing", "gauge", "Number of requests processing.", core.busy),
            ("requests_deferred", "gauge", "Number of requests deferred.", core.waiting),
        ]
        lines: list[str] = []
        for name, kind, help_, value in series:
            lines += [
                f"# HELP llamacpp:{name} {help_}",
                f"# TYPE llamacpp:{name} {kind}",
                f"llamacpp:{name} {value}",
            ]
        return web.Response(
            text="\n".join(lines) + "\n", headers={"Content-Type": "text/plain; version=0.0.4"}
        )
