"""`llama2_format: raw` — a prompt string for a text-generation server.

Two flavours (`model.options.raw_flavor`): `hf` (HF Inference API / TGI, Kong's raw
format) and `llamacpp` (llama.cpp's native `/completion`). Two chat templates
(`model.options.chat_template`): `llama2` (Meta's Llama-2 chat format) and `kong`
(Kong's own builder, byte for byte).
"""

from __future__ import annotations

from typing import Any

from ..config import CHAT, ModelOptions
from ..framing import SSESplitter
from ..jsonutil import JSONDecodeError, loads
from . import fields
from .base import Adapter, Call, Parsed, ResponseError, TransformError, Usage
from .common import (
    TranslatingDecoder,
    completion_response,
    content_text,
    error_message,
    estimate_prompt_tokens,
    make_usage,
    penalties,
    stop_list,
    tuning,
    usage_from_openai,
)
from .fields import TOOLS_TARGET

FMT = "raw"
KONG_COMPLETIONS = "<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> {} [/INST]"

# ------------------------------------------------------------------ prompt templates


_PLAIN_ROLES = ("system", "user", "assistant")


def _plain_role(message: Any) -> Any:
    """The role of a plain message (a dict with one of the plain roles and no tool calls,
    the common case, checked cheaply), else None."""
    role = message.get("role") if type(message) is dict else None
    if role not in _PLAIN_ROLES or "tool_calls" in message or "function_call" in message:
        return None
    return role


def _text(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    return content if type(content) is str else content_text(content, f"messages[{index}]", FMT)


def _role(message: Any, where: str) -> Any:
    """The role a template renders the message as (`developer` is `system`); tool turns
    and tool calls have no place in a plain-text prompt."""
    if not isinstance(message, dict):
        raise TransformError(f"{where}: not an object")
    role = message.get("role")
    what = f"role {role!r} is" if role in ("tool", "function") else None
    if message.get("tool_calls") or message.get("function_call"):
        what = what or "tool_calls are"
    if what:
        raise TransformError(f"{where}: {what} not supported by raw targets; {TOOLS_TARGET}")
    return "system" if role == "developer" else role


def llama2_prompt(messages: list[Any]) -> str:
    """Meta's Llama-2 chat format: `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{u1} [/INST]
    {a1} </s><s>[INST] {u2} [/INST]`. Every system message goes (joined with "\\n") into
    the one system block; consecutive turns of one role are joined with "\\n"; the
    conversation starts with a user turn; a last assistant turn is a prefill."""
    systems: list[str] = []
    turns: list[list[str]] = []  # alternating user / assistant texts
    roles: list[str] = []
    for i, message in enumerate(messages):
        role = _plain_role(message)
        if role is None:
            where = f"messages[{i}]"
            role = _role(message, where)
            if role not in _PLAIN_ROLES:
                raise TransformError(f"{where}: the llama2 template has no role {role!r}")
        text = _text(message, i).strip()
        if role == "system":
            systems.append(text)
        elif roles and roles[-1] == role:
            turns[-1].append(text)
        elif not roles and role != "user":
            raise TransformError(f"messages[{i}]: the conversation must start with a user message")
        else:
            roles.append(role)
            turns.append([text])
    if not turns:
        raise TransformError("messages: no user message")
    texts = ["\n".join(t) for t in turns]
    if systems:
        texts[0] = "<<SYS>>\n" + "\n".join(systems) + "\n<</SYS>>\n\n" + texts[0]
    prefill = texts.pop() if len(texts) % 2 == 0 else None
    parts = []
    for i in range(0, len(texts) - 1, 2):
        parts.append(f"<s>[INST] {texts[i]} [/INST] {texts[i + 1]} </s>")
    parts.append(f"<s>[INST] {texts[-1]} [/INST]")
    if prefill:
        parts.append(" " + prefill)
    return "".join(parts)


def kong_prompt(messages: list[Any]) -> str:
    """Kong's builder (kong/llm/drivers/llama2.lua): by position, whatever the role —
    message 1 → `<s>[INST] <<SYS>> {c} <</SYS>>`, message 2 → ` {c} [/INST]`; after that
    `system` → ` {c} </s>`, `user` → ` <s>[INST] {c} [/INST]`, other roles dropped (Kong's
    choice, kept for byte compatibility; tool turns are refused as in `llama2`)."""
    parts = []
    for i, message in enumerate(messages):
        role = _plain_role(message)
        if role is None:
            role = _role(message, f"messages[{i}]")
        if i > 1 and role not in ("system", "user"):
            continue
        text = _text(message, i)
        if i == 0:
            parts.append(f"<s>[INST] <<SYS>> {text} <</SYS>>")
        elif i == 1:
            parts.append(f" {text} [/INST]")
        elif role == "system":
            parts.append(f" {text} </s>")
        else:
            parts.append(f" <s>[INST] {text} [/INST]")
    return "".join(parts)


def build_prompt(call: Call, opts: ModelOptions) -> str | list[int]:
    """The prompt string; for llama.cpp with the llama2 template a completions prompt
    may also be one token-id array, sent as given."""
    kong = opts.chat_template == "kong"
    llamacpp = opts.raw_flavor == "llamacpp"
    if call.route_type == CHAT:
        messages = call.body.get("messages")
        if not isinstance(messages, list):
            raise TransformError("messages: not a list")
        prompt = kong_prompt(messages) if kong else llama2_prompt(messages)
    else:
        label = (fields.LLAMACPP if llamacpp else fields.TGI).label
        given = fields.one_prompt(call.body.get("prompt"), label, tokens=llamacpp and not kong)
        if not kong or not isinstance(given, str):
            return given  # a completions prompt is the client's, as given
        prompt = KONG_COMPLETIONS.format(given)
    if llamacpp and prompt.startswith("<s>"):
        prompt = prompt[3:]  # llama.cpp adds BOS itself
    return prompt


# ------------------------------------------------------------------ requests


def _hf_request(
    call: Call, body: dict[str, Any], opts: ModelOptions, prompt: Any, special: bool
) -> dict[str, Any]:
    t = tuning(body, opts)
    params: dict[str, Any] = {}
    if "max_tokens" in t:
        params["max_new_tokens"] = t["max_tokens"]
    # TGI rejects temperature <= 0, top_p >= 1 and top_k <= 0 (422); each of those
    # values means "this filter off", which is what omitting the key gives.
    temperature, top_p, top_k = t.get("temperature"), t.get("top_p"), t.get("top_k")
    if temperature is not None and temperature > 0:
        params["temperature"] = temperature
    if top_p is not None and top_p < 1:
        params["top_p"] = top_p
    if top_k is not None and top_k > 0:
        params["top_k"] = top_k
    stop = stop_list(body)
    if stop is not None:
        params["stop"] = stop  # TGI leaves the stop in the text: cut in parse / the decoder
    if special:
        params.update(penalties(body, ("seed", "frequency_penalty")))
        for key, value in fields.natives(call, fields.TGI).items():
            # typical_p 1 (Ollama's "off") is a 422 for TGI, like top_p 1
            if key != "typical_p" or not isinstance(value, int | float) or value < 1:
                params[key] = value
        schema = fields.json_schema(body, fields.TGI)
        if schema is not None:
            params["grammar"] = {"type": "json", "value": schema}
    params["details"] = True  # the generated token count, in the non-stream answer too
    params["stream"] = call.stream
    out: dict[str, Any] = {"inputs": prompt, "parameters": params}
    if call.stream:
        out["stream"] = True  # TGI's `/` route reads the top-level flag
    return out


def _llamacpp_request(
    call: Call, body: dict[str, Any], opts: ModelOptions, prompt: Any, special: bool
) -> dict[str, Any]:
    t = tuning(body, opts)
    out: dict[str, Any] = {"prompt": prompt}
    if "max_tokens" in t:
        out["n_predict"] = t.pop("max_tokens")
    out.update(t)
    stop = stop_list(body)
    if stop is not None:
        out["stop"] = stop
    if special:
        out.update(penalties(body, ("seed", "frequency_penalty", "presence_penalty")))
        schema = fields.json_schema(body, fields.LLAMACPP)
        if schema is not None:
            out["json_schema"] = schema
        if body.get("logit_bias"):
            out["logit_bias"] = fields.token_bias(body["logit_bias"])
        out.update(fields.natives(call, fields.LLAMACPP))
    out["stream"] = call.stream
    out["cache_prompt"] = True
    return out


# ------------------------------------------------------------------ responses


def _after_inst(text: str) -> str:
    """HF's API may echo the prompt: keep what follows the last `[/INST]`, stripped."""
    cut = text.rfind("[/INST]")
    if cut >= 0:
        text = text[cut + 7 :]
    return text.strip()


def _parse_hf(call: Call, obj: Any) -> tuple[str, str, Usage]:
    item: Any = obj
    if isinstance(obj, dict) and "data" in obj:
        item = obj["data"]
    if isinstance(item, list):
        if not item:
            raise ResponseError("cannot parse response from llama2 endpoint")
        item = item[0]  # several sequences (Kong refuses them): the first one answers
    if not isinstance(item, dict):
        raise ResponseError("cannot parse response from llama2 endpoint")
    generated = item.get("generated_text")
    if not isinstance(generated, str):
        raise ResponseError("response data is empty from llama2 endpoint")
    stops = fields.stops(call.body)
    text = _after_inst(fields.cut_stop(generated, stops) if stops else generated)
    details = item.get("details")
    if not isinstance(details, dict):
        details = {}
    reason = "length" if details.get("finish_reason") == "length" else "stop"
    usage = usage_from_openai(obj.get("usage") if isinstance(obj, dict) else None)
    if usage is None:
        usage = _tgi_usage(call, details, len(text))
    return text, reason, usage


def _counted_usage(call: Call, prompt: Any, completion: Any, text_len: int) -> Usage:
    """Upstream counters where given; a missing one is our estimate (and says so)."""
    if isinstance(prompt, int) and isinstance(completion, int):
        return make_usage(prompt, completion)
    if not isinstance(prompt, int):
        prompt = estimate_prompt_tokens(call)
    if not isinstance(completion, int):
        completion = (text_len + 3) // 4
    return Usage(prompt, completion, prompt + completion, estimated=True)


def _tgi_usage(call: Call, details: dict[str, Any], text_len: int) -> Usage:
    """TGI counts generated tokens; some versions also give the prompt's in stream
    details (`prompt_tokens` or `input_length`)."""
    prompt = details.get("prompt_tokens", details.get("input_length"))
    return _counted_usage(call, prompt, details.get("generated_tokens"), text_len)


def _llamacpp_usage(call: Call, obj: dict[str, Any], text_len: int) -> Usage:
    return _counted_usage(call, obj.get("tokens_evaluated"), obj.get("tokens_predicted"), text_len)


def _llamacpp_reason(obj: dict[str, Any]) -> str:
    return "length" if obj.get("stop_type") == "limit" else "stop"


class RawAdapter(Adapter):
    format = "raw"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        llamacpp = opts.raw_flavor == "llamacpp"
        body = fields.effective_body(call)
        special = fields.special(call)
        if special:
            profile = fields.LLAMACPP if llamacpp else fields.TGI
            fields.refuse(body, profile)
            untemplated = call.route_type != CHAT and opts.chat_template != "kong"
            suffix = fields.native_fields(call, FMT, untemplated).get("suffix")
            if suffix:
                raise TransformError(fields.reason("suffix", suffix, profile))
        prompt = build_prompt(call, opts)
        if llamacpp:
            return _llamacpp_request(call, body, opts, prompt, special)
        return _hf_request(call, body, opts, prompt, special)

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        try:
            obj = loads(body)
        except JSONDecodeError:
            raise ResponseError("failed to decode llama2 response") from None
        upstream_model = None
        if opts.raw_flavor == "llamacpp":
            if not isinstance(obj, dict) or not isinstance(obj.get("content"), str):
                raise ResponseError("'content' not in llama.cpp response")
            text = obj["content"]
            reason = _llamacpp_reason(obj)
            usage = _llamacpp_usage(call, obj, len(text))
            upstream_model = obj.get("model") if isinstance(obj.get("model"), str) else None
        else:
            text, reason, usage = _parse_hf(call, obj)
        model = call.model or upstream_model
        return Parsed(completion_response(call, model, text, reason, usage), usage, upstream_model)

    def decoder(self, call: Call, opts: ModelOptions) -> TranslatingDecoder:
        if opts.raw_flavor == "llamacpp":
            return LlamaCppDecoder(call)
        return TGIDecoder(call)


# ------------------------------------------------------------------ stream decoders


class TGIDecoder(TranslatingDecoder):
    """TGI `/generate_stream` (and `/` with stream): `data:{"token":{"text","special"},
    "generated_text":null}` per token; the last event also has `generated_text` and
    `details`; no [DONE].

    TGI streams the stop sequence that ended generation; with stops in the request the
    end of the text that could begin one is held back until the next token shows it
    does not, and a stop the answer ends with is dropped."""

    def __init__(self, call: Call) -> None:
        super().__init__(call, SSESplitter())
        stops = fields.stops(call.body)
        self._stops = fields.StopFilter(stops) if stops else None

    def _frame(self, frame: bytes, out: list[bytes]) -> None:
        if frame == b"[DONE]":  # not sent by TGI; tolerated from look-alikes
            self._release(out)
            self._final("stop", self._estimated_usage(), out)
            return
        try:
            obj = loads(frame)
        except JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self._fail("failed to decode llama2 stream event", out)
            return
        if "error" in obj:
            self._fail(error_message(obj["error"]), out)
            return
        token = obj.get("token")
        if isinstance(token, dict) and not token.get("special"):
            text = token.get("text")
            if isinstance(text, str):
                self._text(self._stops.feed(text) if self._stops else text, out)
        if obj.get("generated_text") is not None:
            self._release(out)
            details = obj.get("details")
            if not isinstance(details, dict):
                details = {}
            reason = "length" if details.get("finish_reason") == "length" else "stop"
            self._final(reason, _tgi_usage(self.call, details, self.completion_text_len), out)

    def _release(self, out: list[bytes]) -> None:
        if self._stops:
            self._text(self._stops.end(), out)


class _LlamaCppSSE(SSESplitter):
    """llama.cpp writes a streaming error as an `error: {…}` field (some builds) rather
    than `data: {"error": …}`; both reach the decoder as `{"error": …}`."""

    __slots__ = ()

    def _field(self, line: bytes) -> None:
        if line.startswith(b"error:"):
            value = line[6:].strip()
            self._data.append(b'{"error":' + (value or b'"upstream error"') + b"}")


class LlamaCppDecoder(TranslatingDecoder):
    """llama.cpp `/completion` stream: `data: {"content","stop":false}` … the last event
    has `stop: true`, `stop_type`, `tokens_predicted`, `tokens_evaluated`; `:` keep-alive
    comments; no [DONE]."""

    def __init__(self, call: Call) -> None:
        super().__init__(call, _LlamaCppSSE())

    def _frame(self, frame: bytes, out: list[bytes]) -> None:
        try:
            obj = loads(frame)
        except JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self._fail("failed to decode llama.cpp stream event", out)
            return
        if "error" in obj:
            self._fail(error_message(obj["error"]), out)
            return
        text = obj.get("content")
        if isinstance(text, str) and text:
            self._text(text, out)
        if obj.get("stop") is True:
            if isinstance(obj.get("model"), str):
                self.model = obj["model"]
            self._final(
                _llamacpp_reason(obj),
                _llamacpp_usage(self.call, obj, self.completion_text_len),
                out,
            )
