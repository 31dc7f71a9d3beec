"""Reading what discovery wrote: pure functions over `TargetState`, for routing and the
balancers. Nothing here imports the gateway, so the module can move into `balancers`
as it is (only the `TargetState` import changes).

The staleness rule: `busy_reported` and `deferred_reported` describe the server as of
`signals_at` (the caller's monotonic clock). A signal older than `max_age` (3 × the
discovery interval) is unknown, exactly as if it had never been read. Discovery itself
sets a field to None once it could not read it for that long, but a reader must not
rely on that alone: a stopped or stuck poller writes nothing, so only the reader's own
age check keeps a last busy count from steering traffic forever.

Unknown is never zero: a target whose load is unknown is ranked by what the gateway
knows itself (its own in-flight count), and is never refused for capacity on a
reported count it does not have.

Models are fail-open: `models_installed is None` means "not discovered", and such a
target may serve any model. Discovery resets the models to None when it can no longer
read them, so a reader takes the sets at face value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from balancers import TargetState
from balancers.capacity import reported_busy, reported_deferred

# The staleness rule lives with the balancers, which read these figures on every pick.
fresh_busy = reported_busy
fresh_deferred = reported_deferred


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Which targets may serve a client-named model.

    `candidates`: targets that have the model or whose models are unknown, those with it
    loaded first, the rest in config order. `loaded`: the subset known to have it in
    memory (routing may offer these to the balancer first: no load wait). `available`:
    every model some candidate's server lists, sorted, for the error message."""

    candidates: list[TargetState]
    loaded: list[TargetState]
    available: list[str]

    def not_available(self, model: str) -> str:
        """The client-facing reason when `candidates` is empty."""
        names = ", ".join(self.available) or "none"
        return f"model '{model}' is not available; available: {names}"


def model_choice(states: Sequence[TargetState], model: str) -> ModelChoice:
    """Targets among `states` (a request's candidates, none of which names its own model:
    the client's model goes upstream as sent) that may serve `model`.

    The sets hold each name as the server lists it and, for `x:latest`, also `x`
    (discovery's normalisation, as Ollama resolves a bare name to its `latest` tag), so
    a client's `llama2` matches a listed `llama2:latest` by plain membership."""
    loaded: list[TargetState] = []
    rest: list[TargetState] = []
    listed: set[str] = set()
    for s in states:
        installed = s.models_installed
        if installed is None:
            rest.append(s)
            continue
        listed.update(installed)
        if model not in installed:
            continue
        if s.models_loaded is not None and model in s.models_loaded:
            loaded.append(s)
        else:
            rest.append(s)
    return ModelChoice(loaded + rest, loaded, display_names(listed))


def display_names(names: set[str] | frozenset[str]) -> list[str]:
    """`names` without the bare twins normalisation added: `llama2` is dropped when
    `llama2:latest` is there, so a listing shows each model once, as its server names
    it."""
    return sorted(n for n in names if f"{n}:latest" not in names)
