"""The Prometheus text exposition, written in the gateway's own label order."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

_TYPE_SUFFIX = {"counter": "_total"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format with labels in their declared order.

    prometheus_client sorts label names alphabetically; Kong's exporter writes them in
    declaration order (`ai_provider, ai_model, …`). Prometheus does not care, but people
    diff our output against Kong's, so we keep Kong's order.
    """
    out: list[str] = []
    for family in registry.collect():
        name = family.name + _TYPE_SUFFIX.get(family.type, "")
        mtype = "untyped" if family.type == "unknown" else family.type
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if sample.labels:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
            else:
                out.append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()
