"""What discovery reads from each server's answers: pure functions of a response body.

Each raises `ValueError` (orjson's decode error is one) when the body is not the shape
the server documents, so one malformed answer fails that read and nothing else. Single
odd entries inside a well-formed list are skipped rather than failing the whole list: a
newer server adding a kind of entry must not blind discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import jsonutil

LATEST = ":latest"


def model_names(names: list[str]) -> frozenset[str]:
    """Each name, plus `x` for `x:latest`: Ollama resolves a bare name to its `latest`
    tag, so a client asking for `llama2` gets what the server lists as `llama2:latest`.

    Applied to every server kind: OpenAI-format targets are often Ollama's own `/v1`,
    and a missing twin would refuse requests the server serves, while an extra one
    costs at most an upstream 404 the failover rules already handle."""
    out = set(names)
    out.update(n.removesuffix(LATEST) for n in names if n.endswith(LATEST) and n != LATEST)
    return frozenset(out)


def _object(body: bytes) -> dict[str, Any]:
    doc = jsonutil.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    items = doc.get(key)
    if not isinstance(items, list):
        raise ValueError(f"no {key!r} list")
    return items


def ollama_models(body: bytes) -> frozenset[str]:
    """`GET /api/tags` (installed) or `GET /api/ps` (loaded): `{"models": [{"name": …}]}`."""
    entries = _list(_object(body), "models")
    names = [e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]
    return model_names(names)


@dataclass(frozen=True, slots=True)
class OpenAIModels:
    ids: frozenset[str]
    # A single-model llama-server (one entry, `owned_by: llamacpp`, no router `status`):
    # it answers to any model name, and has /slots, /props and /metrics.
    llama_server: bool
    # llama-server in router mode gives each model a `status`: those it has loaded.
    loaded: frozenset[str] | None


def _status(entry: dict[str, Any]) -> str | None:
    status = entry.get("status")
    value = status.get("value") if isinstance(status, dict) else None
    return value if isinstance(value, str) else None


def openai_models(body: bytes) -> OpenAIModels:
    """`GET /v1/models`: `{"data": [{"id": …, "owned_by": …}]}`."""
    entries = [e for e in _list(_object(body), "data") if isinstance(e, dict)]
    entries = [e for e in entries if isinstance(e.get("id"), str)]
    ids = [e["id"] for e in entries]
    loaded: frozenset[str] | None = None
    statuses = [_status(e) for e in entries]
    if entries and None not in statuses:
        up = [i for i, st in zip(ids, statuses, strict=True) if st == "loaded"]
        loaded = model_names(up)
    single = len(entries) == 1 and entries[0].get("owned_by") == "llamacpp" and loaded is None
    return OpenAIModels(model_names(ids), single, loaded)


@dataclass(frozen=True, slots=True)
class Slots:
    total: int
    busy: int


def llamacpp_slots(body: bytes) -> Slots:
    """`GET /slots`: a list of slots, each `is_processing` (current servers) or `state`
    (older ones: 0 idle, anything else busy)."""
    slots = jsonutil.loads(body)
    if not isinstance(slots, list):
        raise ValueError("not a JSON list")
    busy = 0
    for slot in slots:
        if not isinstance(slot, dict):
            raise ValueError("a slot is not an object")
        processing = slot.get("is_processing")
        if isinstance(processing, bool):
            busy += processing
        elif isinstance(slot.get("state"), int) and not isinstance(slot["state"], bool):
            busy += slot["state"] != 0
        else:
            raise ValueError("a slot says neither is_processing nor state")
    return Slots(len(slots), busy)


@dataclass(frozen=True, slots=True)
class Props:
    total_slots: int | None
    sleeping: bool  # idle long enough to have unloaded its model (--sleep-idle-seconds)
    # Current servers say which monitoring endpoints are on; None: not said (older ones).
    slots_endpoint: bool | None
    metrics_endpoint: bool | None


def llamacpp_props(body: bytes) -> Props:
    """`GET /props`: `total_slots` (the server's --parallel), `is_sleeping`, and on
    current servers `endpoint_slots` / `endpoint_metrics`."""
    doc = _object(body)

    def flag(key: str) -> bool | None:
        value = doc.get(key)
        return value if isinstance(value, bool) else None

    total = doc.get("total_slots")
    if not (isinstance(total, int) and not isinstance(total, bool) and total > 0):
        total = None
    sleeping = flag("is_sleeping") is True
    return Props(total, sleeping, flag("endpoint_slots"), flag("endpoint_metrics"))


@dataclass(frozen=True, slots=True)
class Metrics:
    processing: int | None
    deferred: int | None


_GAUGES = {b"llamacpp:requests_processing": "processing", b"llamacpp:requests_deferred": "deferred"}


def llamacpp_metrics(body: bytes) -> Metrics:
    """`GET /metrics` (Prometheus text): the `requests_processing` and
    `requests_deferred` gauges; either may be absent (None)."""
    found: dict[str, int] = {}
    for line in body.splitlines():
        if not line.startswith(b"llamacpp:requests_"):
            continue
        if b"{" in line:  # labels, should a server ever add some
            name, rest = line.split(b"{", 1)[0], line.rsplit(b"}", 1)[-1]
        else:
            name, _, rest = line.partition(b" ")
        key = _GAUGES.get(name)
        if key is None:
            continue
        fields = rest.split()
        value = float(fields[0]) if fields else float("nan")  # ValueError if not a number
        if not 0 <= value < float("inf"):
            raise ValueError(f"{name.decode()} is not a count")
        found[key] = int(value)
    return Metrics(found.get("processing"), found.get("deferred"))
