"""Which request fields each translated format can carry, and the refusals for those
it cannot (docs/fields.md is the table).

No silent drops: a field that could change the answer is mapped, passed, or refused
with a `TransformError` naming the field and the target. Only fields that cannot change
the answer (user, store, metadata, …) are left out without a word.

Cost: the common request (messages, model, stream, a few tuning keys) touches none of
this; `special` is one set test over the body's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import Call, TransformError

OPENAI = "use an openai-format target"
TOOLS_TARGET = "use an ollama or openai-format target"

_LLAMACPP_ONLY = frozenset(
    {
        "dynatemp_range",
        "dynatemp_exponent",
        "xtc_probability",
        "xtc_threshold",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "top_n_sigma",
    }
)
# Ollama `options` entries and llama.cpp names that shape sampling: answer-changing, so
# mapped where the server has them and refused where not. From clients (top level, e.g.
# the OpenAI SDK's extra_body) and the Ollama front door (`Call.native_options`).
NATIVE_SAMPLING = _LLAMACPP_ONLY | {
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repetition_penalty",  # TGI's / vLLM's name for repeat_penalty
    "repeat_last_n",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
    "num_keep",
    "penalize_newline",
}
# Where the model runs, never what it says: passed to Ollama, ignored elsewhere.
HINTS = frozenset(
    {
        "num_ctx",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_batch",
        "use_mmap",
        "use_mlock",
        "numa",
        "low_vram",
        "vocab_only",
        "f16_kv",
    }
)
# Ollama options with an OpenAI field: read as that field (the client's field wins).
OPENAI_NAMED = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

# OpenAI fields only an OpenAI-compatible server can honour, each with the test for a
# value that asks for nothing (absent, falsy, the default).
_IDLE: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v is None or v == 1,
    "logprobs": lambda v: not v,
    "top_logprobs": lambda v: not v,
    "echo": lambda v: not v,
    "best_of": lambda v: v is None or v == 1,
    "logit_bias": lambda v: not v,
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none", "auto"),
    "reasoning_effort": lambda v: v in (None, "none"),
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "verbosity": lambda v: v is None,
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "suffix": lambda v: not v,
    "presence_penalty": lambda v: not v,
}
OPENAI_ONLY = frozenset(set(_IDLE) - {"tools", "tool_choice", "suffix", "presence_penalty"})

# Every top-level key a translated format must look at beyond messages/prompt, model,
# stream, max_tokens, max_completion_tokens, temperature, top_p, top_k and stop.
SPECIAL = frozenset(
    {
        *_IDLE,
        "seed",
        "frequency_penalty",
        "parallel_tool_calls",
        "response_format",
        "keep_alive",
        *NATIVE_SAMPLING,
        *HINTS,
    }
)


@dataclass(frozen=True, slots=True)
class Profile:
    """What one translated format can carry."""

    label: str  # how messages name it: "ollama", "raw hf (TGI)", "raw llamacpp"
    family: str  # "ollama" | "raw": for what no target of the family can do
    refused: frozenset[str]  # fields refused unless idle (see _IDLE)
    native: Mapping[str, str] = field(default_factory=dict)  # sampling name → its name
    native_reasons: Mapping[str, str] = field(default_factory=dict)  # why one is refused


_RAW_REFUSED = OPENAI_ONLY | {"tools", "tool_choice", "suffix"}
OLLAMA = Profile(
    "ollama",
    "ollama",
    OPENAI_ONLY,
    {n: n for n in NATIVE_SAMPLING - _LLAMACPP_ONLY} | {"repetition_penalty": "repeat_penalty"},
)
TGI = Profile(
    "raw hf (TGI)",
    "raw",
    _RAW_REFUSED | {"presence_penalty"},
    {
        "repeat_penalty": "repetition_penalty",
        "repetition_penalty": "repetition_penalty",
        "typical_p": "typical_p",
    },
)
LLAMACPP = Profile(
    "raw llamacpp",
    "raw",
    _RAW_REFUSED - {"logit_bias"},
    {n: n for n in NATIVE_SAMPLING - {"tfs_z", "penalize_newline", "num_keep"}}
    | {"num_keep": "n_keep", "repetition_penalty": "repeat_penalty"},
    {
        "tfs_z": "llama.cpp removed tail-free sampling",
        "penalize_newline": "llama.cpp removed penalize_nl",
    },
)


def special(call: Call) -> bool:
    """Whether the request has anything beyond the plain fields."""
    return (
        not SPECIAL.isdisjoint(call.body) or bool(call.native_options) or bool(call.native_fields)
    )


def effective_body(call: Call) -> dict[str, Any]:
    """The client body, plus Ollama options that have an OpenAI field (num_predict,
    temperature, …) under that field's name when the body does not set it."""
    native = call.native_options
    if not native or OPENAI_NAMED.keys().isdisjoint(native):
        return call.body
    out = {OPENAI_NAMED[k]: v for k, v in native.items() if k in OPENAI_NAMED}
    out.update((k, v) for k, v in call.body.items() if v is not None)
    return out


def refuse(body: dict[str, Any], profile: Profile) -> None:
    """Raise for the first field (in the client's order) of `profile.refused` the body
    sets to something."""
    if profile.refused.isdisjoint(body):
        return
    for name, value in body.items():
        if name in profile.refused and not _IDLE[name](value):
            raise TransformError(reason(name, value, profile))


def reason(name: str, value: Any, p: Profile) -> str:
    """Why `name` (set to `value`) cannot go to a `p` target, and what to do instead."""
    # Named by flavour only where the raw flavours differ.
    fmt = p.label if name in ("presence_penalty", "logit_bias") else p.family
    if name in ("tools", "tool_choice", "suffix"):
        return f"{name} {_are(name)} not supported by {fmt} targets; {TOOLS_TARGET}"
    if name in ("functions", "function_call"):
        instead = "send tools instead" if p.family == "ollama" else f"send tools and {TOOLS_TARGET}"
        return f"{name} (legacy function calling) is not supported by {fmt} targets; {instead}"
    if name in ("n", "best_of"):
        return f"{name}={value} is not supported by {fmt} targets; {OPENAI}"
    if name == "echo":
        return f"echo: true is not supported by {fmt} targets; {OPENAI}"
    if name == "presence_penalty":
        return f"presence_penalty is not supported by {fmt} targets; use frequency_penalty"
    return f"{name} is not supported by {fmt} targets; {OPENAI}"


def _are(name: str) -> str:
    return "are" if name == "tools" else "is"


def natives(call: Call, profile: Profile, hints: bool = False) -> dict[str, Any]:
    """Native sampling options from the body's top level and `call.native_options`,
    under the format's names; server-side hints only when `hints` (Ollama). Ollama also
    takes options we do not know (its own); elsewhere an unknown option is refused."""
    out: dict[str, Any] = {}
    body = call.body
    for name, value in body.items():  # the client's order: the first refusal is reported
        if name in NATIVE_SAMPLING:
            _native(name, value, profile, out)
        elif hints and name in HINTS:
            out[name] = value
    for name, value in (call.native_options or {}).items():
        if name in OPENAI_NAMED:
            continue  # read through effective_body
        if name in HINTS:
            if hints:
                out[name] = value
        elif name in NATIVE_SAMPLING:
            _native(name, value, profile, out)
        elif profile.family == "ollama":
            out[name] = value
        else:
            raise TransformError(f"option {name} is not supported by {profile.label} targets")
    return out


def _native(name: str, value: Any, profile: Profile, out: dict[str, Any]) -> None:
    if value is None:
        return
    mapped = profile.native.get(name)
    if mapped is None:
        why = profile.native_reasons.get(name)
        hint = f" ({why})" if why else ""
        raise TransformError(f"{name} is not supported by {profile.label} targets{hint}")
    out[mapped] = value


def native_fields(call: Call, label: str, untemplated: bool = False) -> dict[str, Any]:
    """Top-level Ollama fields (`call.native_fields`) for a non-Ollama target: keep_alive
    is ignored, a falsy value asks for nothing, `raw: true` is fine where the prompt is
    sent without a template (`untemplated`); `suffix` is returned for the caller to map
    or refuse; anything else is refused by name."""
    out: dict[str, Any] = {}
    for name, value in (call.native_fields or {}).items():
        if name == "keep_alive" or not value:
            continue
        if name == "suffix":
            out[name] = value
        elif name == "raw" and value is True and untemplated:
            continue
        else:
            raise TransformError(_native_field_reason(name, label))
    return out


def _native_field_reason(name: str, label: str) -> str:
    text = f"{name} is not supported by {label} targets"
    if name == "images" and label == "raw":
        return f"{text}; use an ollama target"
    if name in ("system", "template", "raw", "context", "images"):
        return f"{text} on /api/generate; use /api/chat"
    if name == "think":
        return f"{text}; send think: false or use an ollama target"
    return text


def json_format(value: Any, label: str) -> tuple[bool, dict[str, Any] | None]:
    """OpenAI `response_format` → (constrain to JSON?, the schema if one is given)."""
    if value is None:
        return False, None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise TransformError("response_format: json_schema must be an object")
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise TransformError("response_format: json_schema.schema must be an object")
        return True, schema
    if not isinstance(kind, str):
        raise TransformError(
            "response_format must be an object with a type (text, json_object or json_schema)"
        )
    raise TransformError(f"response_format type {kind!r} is not supported by {label} targets")


def json_schema(body: dict[str, Any], profile: Profile) -> dict[str, Any] | None:
    """The JSON schema the answer must follow (any object for json_object), or None."""
    is_json, schema = json_format(body.get("response_format"), profile.label)
    if not is_json:
        return None
    return schema if schema is not None else {"type": "object"}


def token_bias(bias: Any) -> list[list[Any]]:
    """OpenAI's `logit_bias` `{"<token id>": bias}` → llama.cpp's `[[id, bias], …]` (every
    version reads the list form; only newer ones the object)."""
    if not isinstance(bias, dict) or not all(k.isdigit() for k in bias):
        raise TransformError("logit_bias must map token ids to biases")
    return [[int(k), v] for k, v in bias.items()]


def one_prompt(prompt: Any, label: str, tokens: bool = False) -> str | list[int]:
    """A completions `prompt` as one prompt: a string, a one-element list of a string,
    or (where `tokens`) one token-id array. Several prompts are refused."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise TransformError("prompt: not a string or a list of prompts")
    if _token_ids(prompt):
        ids: list[int] = prompt
    elif len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    elif len(prompt) == 1 and isinstance(prompt[0], list) and _token_ids(prompt[0]):
        ids = prompt[0]
    elif all(isinstance(p, (str, list)) for p in prompt):
        raise TransformError(
            f"a list of {len(prompt)} prompts is not supported by {label} targets; "
            f"send one prompt per request or {OPENAI}"
        )
    else:
        raise TransformError("prompt: not a string, a list of strings or of token ids")
    if not tokens:
        raise TransformError(
            f"a token-id prompt is not supported by {label} targets; send text or {OPENAI}"
        )
    return ids


def _token_ids(value: list[Any]) -> bool:
    return bool(value) and all(type(t) is int for t in value)


def stops(body: dict[str, Any]) -> list[str]:
    """The client's stop sequences as a list of non-empty strings."""
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def cut_stop(text: str, stops: list[str]) -> str:
    """The text without the stop sequence it ends with (TGI keeps it; OpenAI does not)."""
    cut = max((len(s) for s in stops if text.endswith(s)), default=0)
    return text[: len(text) - cut]


class StopFilter:
    """Streamed text without the stop sequence that ends it, for servers that stream the
    stop (TGI): the end of the text that could begin a stop is held back until the next
    piece shows it does not; at the end, a stop the held text ends with is dropped."""

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._held = ""

    def feed(self, text: str) -> str:
        """What can be sent now."""
        held = self._held + text
        keep = 0  # the longest end of `held` that is the start of (or is) a stop
        for stop in self._stops:
            for k in range(min(len(stop), len(held)), keep, -1):
                if held.endswith(stop[:k]):
                    keep = k
                    break
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep]

    def end(self) -> str:
        """The rest, at the end of the answer."""
        text, self._held = cut_stop(self._held, self._stops), ""
        return text
