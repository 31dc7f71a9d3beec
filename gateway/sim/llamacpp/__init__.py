"""llama.cpp `llama-server` (native `/completion` with SSE streams, `/embedding`,
`/health`, `/slots`, `/props`, `/metrics`, and its OpenAI-compatible `/v1` layer).

Modelled on a real llama-server, down to what surprises clients: it closes the
connection after every streamed answer although the headers say `Keep-Alive`, and after
every error status with `Connection: close`; `tokens_predicted` counts the tokens cut
from the text (a stop string's, the EOS token).

One module a concern: errors.py (its error objects and the words of its 400s),
state.py (slots, the embeddings setup, and the GETs that show them), native.py
(`/completion`, `/embedding`), v1.py (the OpenAI layer). This module binds them into
the one dialect `FakeUpstream` serves.
"""

from __future__ import annotations

from aiohttp import web

from gateway.sim.base import Core, Dialect
from gateway.sim.llamacpp.errors import error, error_obj, json_error, unavailable
from gateway.sim.llamacpp.native import Native
from gateway.sim.llamacpp.state import Embeddings, Slot, Status, server_model
from gateway.sim.llamacpp.v1 import LlamaCppOpenAI

__all__ = [
    "Embeddings",
    "LlamaCppDialect",
    "LlamaCppOpenAI",
    "error_obj",
    "json_error",
    "server_model",
]


class LlamaCppDialect(Dialect):
    # llama-server answers these without an API key.
    public_paths = frozenset({"/health", "/v1/health", "/models", "/v1/models"})

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        # Without a slot limit the fake shows one slot, busy while anything generates.
        self.slots = [Slot(i) for i in range(core.pool.size or 1)]
        self.embeddings = Embeddings()
        self.status = Status(core, self.slots)
        self.native = Native(core, self.slots, self.embeddings)
        self.openai = LlamaCppOpenAI(core, self.slots, self.embeddings)

    def routes(self) -> list[web.RouteDef]:
        return [
            *self.status.routes(),
            *self.native.routes(),
            web.post("/chat/completions", self.openai.chat),
            *self.openai.routes(),
        ]

    def status_error(self, status: int, model: str) -> web.Response:
        return error(status)

    def unauthorized(self) -> web.Response:
        return error(401)

    def unavailable(self) -> web.Response | None:
        return unavailable(self.core)
