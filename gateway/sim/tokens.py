"""The fakes' token model: how a server's text and a request body become one
deterministic generation (`Plan`), and how big a prompt is.

Kept apart from the servers because it is pure: no I/O, no state, so a test (or the
gateway's own accounting checks) can predict the exact text, token counts and finish
reason of any request from the fake's text, its `Behaviour` and the body alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import jsonutil

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog."
# Chat templates wrap every message in role markers; a fixed overhead keeps counts
# predictable without a real tokenizer.
PER_MESSAGE_TOKENS = 4


@dataclass
class Plan:
    """One generation, decided before the first byte so stream and non-stream agree.

    `finish` is neutral ("length" | "eos" | "stop"); each dialect maps it to its own
    vocabulary (Ollama done_reason, llama.cpp stop_type, TGI finish_reason, OpenAI).
    """

    tokens: list[str]
    finish: str
    stop_word: str
    prompt_tokens: int
    # Every token the model produced (EOS aside): `tokens` are the text kept of them;
    # the one that completed a stop string is cut from the text, yet generated, and
    # llama.cpp, vLLM and llama-cpp-python count it.
    generated: list[str] = field(default_factory=list)
    # What llama.cpp's stream sends with each generated token: text that may be the
    # start of a stop string is held back until the next token settles it (and lost
    # if the length limit comes first); the token completing a stop string sends only
    # the held text before the stop string.
    released: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A plan made without them: nothing was cut, nothing held back.
        self.generated = self.generated or list(self.tokens)
        self.released = self.released or list(self.generated)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def n(self) -> int:
        """Tokens whose text is kept (the count Ollama and TGI report)."""
        return len(self.tokens)

    @property
    def n_generated(self) -> int:
        """Tokens generated, a cut stop-string token included (EOS not)."""
        return len(self.generated)

    @property
    def n_predicted(self) -> int:
        """llama.cpp's `tokens_predicted`: the EOS token that ended a generation is
        decoded and counted too."""
        return self.n_generated + (1 if self.finish == "eos" else 0)


def make_plan(
    text: str,
    n_tokens: int,
    body: Any,
    max_tokens: int | None,
    stops: Sequence[str] = (),
    *,
    keep_stop: bool = False,
) -> Plan:
    """The model "wants" `n_tokens` tokens of `text` then EOS; a cap at or below that
    is hit first (finish "length"), like a real server whose limit check precedes EOS.

    A stop string ends generation early ("stop"); llama.cpp/Ollama/OpenAI cut the
    text before it, TGI (`keep_stop`) keeps the token that completed it.
    """
    wanted = max(n_tokens, 0)
    capped = max_tokens is not None and max_tokens <= wanted
    tokens = tokenize(text, max_tokens if max_tokens is not None and capped else wanted)
    finish, stop_word = ("length" if capped else "eos"), ""
    generated, stop_at = tokens, None
    so_far = ""
    for i, tok in enumerate(tokens if stops else ()):
        so_far += tok
        hits = [(so_far.find(s), s) for s in stops if s in so_far]
        if not hits:
            continue
        stop_at, stop_word = min(hits)
        finish = "stop"
        generated = tokens[: i + 1]
        tokens = generated if keep_stop else _cut(generated, stop_at)
        break
    return Plan(
        tokens,
        finish,
        stop_word,
        count_prompt_tokens(body),
        generated=generated,
        released=_release(generated, stops, stop_at),
    )


def tokenize(text: str, n: int) -> list[str]:
    """The first `n` tokens of `text` repeated: words, each but the first with its space."""
    words = text.split() or ["hello"]
    return [words[i % len(words)] if i == 0 else " " + words[i % len(words)] for i in range(n)]


def _cut(tokens: list[str], pos: int) -> list[str]:
    """The tokens covering text[:pos], the last one truncated if the cut falls inside it."""
    kept: list[str] = []
    start = 0
    for tok in tokens:
        if start + len(tok) > pos:
            if pos > start:
                kept.append(tok[: pos - start])
            break
        kept.append(tok)
        start += len(tok)
    return kept


def _holds_stop_prefix(text: str, stops: Sequence[str]) -> bool:
    """Whether `text` ends with the beginning of a stop string (llama.cpp's partial
    stop match: the text waits for the next token)."""
    return any(text.endswith(s[:k]) for s in stops for k in range(1, len(s) + 1))


def _release(tokens: list[str], stops: Sequence[str], stop_at: int | None) -> list[str]:
    """llama.cpp's streamed text per generated token (see `Plan.released`); `stop_at`
    is where the stop string starts in the text, on the last token."""
    out: list[str] = []
    text, sent = "", 0
    for i, tok in enumerate(tokens):
        text += tok
        if stop_at is not None and i == len(tokens) - 1:
            out.append(text[sent:stop_at])
            break
        if _holds_stop_prefix(text[sent:], stops):
            out.append("")
            continue
        out.append(text[sent:])
        sent = len(text)
    return out


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):  # OpenAI content part {"type": "text", "text": ...}
        return _words(value.get("text"))
    if isinstance(value, int) and not isinstance(value, bool):  # llama.cpp token id
        return 1
    return 0


def count_prompt_tokens(body: Any) -> int:
    """Deterministic prompt size: chat = sum(words + PER_MESSAGE_TOKENS) per message;
    prompt-style bodies (prompt/system/inputs) = words + 1 for BOS, 0 when empty."""
    if isinstance(body, bytes | str):
        try:
            body = jsonutil.loads(body)
        except jsonutil.JSONDecodeError:
            return 0
    if not isinstance(body, dict):
        return 0
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(
            PER_MESSAGE_TOKENS + _words(m.get("content")) for m in messages if isinstance(m, dict)
        )
    n = sum(_words(body.get(key)) for key in ("system", "prompt", "inputs"))
    return n + 1 if n else 0


def as_int(value: Any) -> int | None:
    """A max-tokens field as an int; negative means unlimited (Ollama/llama.cpp -1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 0 else None


def as_stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []
