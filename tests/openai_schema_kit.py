"""Validation against OpenAI's own response schemas (vendored in tests/openai_schema/).

`validate(component, obj)` raises an AssertionError that lists every violation, each as
the JSON path in `obj`, the message and the schema rule that failed. One validator per
component, built on first use. The document is OpenAPI 3.1, whose schemas are JSON
Schema 2020-12: checked with that draft, formats included where jsonschema knows them.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

COMPONENTS = Path(__file__).parent / "openai_schema" / "openai-components.json"
_BASE = "urn:openai-openapi:components"
_MESSAGE_MAX = 300

# OpenAI's legacy completions stream has no schema of its own: the document says the
# streamed and whole answers "share the same shape" (CreateCompletionResponse). Yet
# OpenAI's own stream sends `"finish_reason": null` on every chunk before the last, and
# `"usage": null` on every chunk but the usage chunk under `stream_options.include_usage`,
# values that shape does not allow (no conforming stream could exist). Completion chunks
# are checked against CreateCompletionResponse with exactly those two nulls admitted;
# every other rule holds (the `required` list with `logprobs` included).
COMPLETION_CHUNK = "CreateCompletionResponse (stream chunk)"


@functools.cache
def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(COMPONENTS.read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    choice = chunk["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    chunk["properties"]["usage"] = {"anyOf": [chunk["properties"]["usage"], {"type": "null"}]}
    schemas[COMPLETION_CHUNK] = chunk
    return doc


def components() -> list[str]:
    return sorted(document()["components"]["schemas"])


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(_BASE, resource)


@functools.cache
def validator(component: str) -> Draft202012Validator:
    """The validator of one component (cached: built once per component)."""
    if component not in document()["components"]["schemas"]:
        raise KeyError(f"no component {component!r} in {COMPONENTS.name}")
    pointer = "/components/schemas/" + component.replace("~", "~0").replace("/", "~1")
    schema = {"$schema": Draft202012Validator.META_SCHEMA["$id"], "$ref": f"{_BASE}#{pointer}"}
    return Draft202012Validator(
        schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"


def _describe(err: ValidationError, indent: str = "  ") -> list[str]:
    rule = "/".join(str(p) for p in err.relative_schema_path)
    lines = [f"{indent}{err.json_path}: {_short(err.message)}  [rule: {rule}]"]
    # anyOf/oneOf: why each alternative failed, so the cause is visible, not just "not valid".
    for sub in sorted(err.context or (), key=lambda e: (list(e.schema_path), e.message)):
        lines.extend(_describe(sub, indent + "    "))
    return lines


def violations(component: str, obj: Any) -> list[ValidationError]:
    """Every violation of the component by `obj`, in path order."""
    return sorted(validator(component).iter_errors(obj), key=lambda e: (e.json_path, e.message))


def validate(component: str, obj: Any, what: str = "") -> None:
    """Raise an AssertionError listing every violation of `component` by `obj`."""
    __tracebackhide__ = True  # pytest shows the caller, not this frame
    errors = violations(component, obj)
    if not errors:
        return
    head = f"{what + ': ' if what else ''}{len(errors)} violation(s) of {component}:"
    lines = [head]
    for err in errors:
        lines.extend(_describe(err))
    lines.append("  instance: " + _short(json.dumps(obj, ensure_ascii=False)))
    raise AssertionError("\n".join(lines))
