"""Writes a tiny Llama-architecture GGUF model for the real-upstream tests.

    python tests/real/tinymodel.py /tmp/tiny.gguf

The file is a genuine llama.cpp model (architecture `llama`, SentencePiece-style
`llama` tokenizer, F32 tensors, about 0.6 MB) that loads in milliseconds, so
`llama-server` and `llama-cpp-python` can serve it in CI. Its weights are random,
but arranged so that tests can rely on three things:

* **Deterministic greedy decoding.** A fixed list of whole-word tokens (`▁llama`,
  `▁gateway`, ...) forms a cycle. The word tokens' embeddings are orthonormal
  directions (under a random rotation) and the output row of each word is the
  embedding of the word before it, so after a word the next word wins by a wide
  logit margin. Every other token's embedding leans towards one "anchor" word, so
  whatever the prompt ends with, the continuation joins the cycle at once.
* **No end of text.** Residual lane 0 holds a constant that no block writes to
  (those rows of `attn_output`/`ffn_down` are zero); output column 0 turns it into a
  fixed per-token logit bias that bans `</s>`, `<s>`, `<unk>`, byte tokens and
  every sub-word piece. Generation therefore runs until `max_tokens` /
  `n_predict` or a stop string, and the text is made of ` word` pieces only.
* **A real chat template.** `tokenizer.chat_template` is the Llama-2-chat format
  (`<s>[INST] <<SYS>>\\n…\\n<</SYS>>\\n\\n… [/INST]`, answers closed by ` </s>`), so
  the servers' chat endpoints render prompts the way Meta's Llama-2-chat does.

The vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte-fallback tokens `<0x00>` …
`<0xFF>` (any UTF-8 text tokenizes), `▁`, ASCII letters, digits and punctuation,
`▁`+letter, and every `▁`-prefix of the cycle words (SentencePiece merges grow a
piece one character at a time, so a word is one token only if its prefixes exist).
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - reported by the fixtures as a skip
    gguf = None  # type: ignore[assignment]

SPM_SPACE = "\u2581"

# The generation cycle, in order: greedy output walks this list round and round.
CYCLE_WORDS = (
    "llama",
    "alpaca",
    "gateway",
    "token",
    "model",
    "hello",
    "world",
    "kong",
    "proxy",
    "stream",
    "route",
    "wool",
    "mountain",
    "river",
    "green",
    "quiet",
    "bright",
    "swift",
    "cloud",
    "stone",
    "light",
    "night",
    "music",
    "garden",
    "paper",
    "window",
    "coffee",
    "orange",
    "silver",
    "forest",
    "ocean",
    "summer",
    "winter",
    "yellow",
    "purple",
    "little",
    "happy",
    "simple",
    "fast",
    "slow",
    "north",
    "south",
    "east",
    "west",
    "apple",
    "bread",
    "honey",
    "tiger",
)

# Llama-2-chat, as Meta's reference code formats a dialog: an optional leading system
# message is folded into the first user turn; user turns are `<s>[INST] … [/INST]`,
# assistant turns ` … </s>`; roles must alternate starting with the user.
LLAMA2_CHAT_TEMPLATE = "".join(
    [
        "{%- if messages[0]['role'] == 'system' -%}",
        "{%- set sys_text = messages[0]['content'] -%}",
        "{%- set turns = messages[1:] -%}",
        "{%- else -%}",
        "{%- set sys_text = '' -%}",
        "{%- set turns = messages -%}",
        "{%- endif -%}",
        "{%- for m in turns -%}",
        "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
        "{%- endif -%}",
        "{%- if m['role'] == 'user' -%}",
        "{%- if loop.first and sys_text -%}",
        "{%- set text = '<<SYS>>\\n' + sys_text + '\\n<</SYS>>\\n\\n' + m['content'] -%}",
        "{%- else -%}",
        "{%- set text = m['content'] -%}",
        "{%- endif -%}",
        "{{ bos_token + '[INST] ' + (text | trim) + ' [/INST]' }}",
        "{%- elif m['role'] == 'assistant' -%}",
        "{{ ' ' + (m['content'] | trim) + ' ' + eos_token }}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
)


@dataclass(frozen=True)
class Shape:
    layers: int = 2
    hidden: int = 64  # lane 0 = bias lane, the rest carry the token identity
    heads: int = 4
    ffn: int = 128
    context: int = 32768
    seed: int = 7
    # Logit of the cycle successor after a word (the margin over every other token).
    margin: float = 24.0
    # Logit added to every token that must never be generated.
    ban: float = -60.0
    # Share of a non-word token's embedding that points at its anchor word.
    anchor: float = 0.8
    # Scale of the random block weights (their output perturbs the residual slightly).
    noise: float = 0.02


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    words: list[int]  # token ids of CYCLE_WORDS, in cycle order

    @property
    def size(self) -> int:
        return len(self.tokens)


def build_vocab() -> Vocab:
    tt = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"]
    types = [tt.UNKNOWN, tt.CONTROL, tt.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [tt.BYTE] * 256
    pieces = [SPM_SPACE, *string.ascii_letters, *string.digits, *string.punctuation]
    pieces += [SPM_SPACE + c for c in string.ascii_lowercase + string.ascii_uppercase]
    for word in CYCLE_WORDS:
        pieces += [SPM_SPACE + word[:n] for n in range(2, len(word) + 1)]
    for piece in dict.fromkeys(pieces):  # ordered, no duplicates
        if piece not in tokens:
            tokens.append(piece)
            types.append(tt.NORMAL)
    # The SentencePiece merge order prefers higher scores: longer pieces first; control,
    # byte and unknown tokens never take part in merges.
    scores = [
        float(len(t)) if ty == tt.NORMAL else 0.0 for t, ty in zip(tokens, types, strict=True)
    ]
    index = {t: i for i, t in enumerate(tokens)}
    words = [index[SPM_SPACE + w] for w in CYCLE_WORDS]
    return Vocab(tokens, scores, [int(t) for t in types], words)


def _weights(shape: Shape, vocab: Vocab) -> dict[str, np.ndarray]:
    """All tensors, numpy (rows = outputs, columns = inputs)."""
    rng = np.random.default_rng(shape.seed)
    d, n = shape.hidden, vocab.size
    lanes = d - 1  # identity lanes 1..d-1
    if len(vocab.words) >= lanes:
        raise ValueError("hidden size too small for the word cycle")
    f32 = np.float32

    # Identity space (before the random rotation): word i owns axis i; the spare axes
    # give every other token a random private component.
    spare = lanes - len(vocab.words)
    word_of = {tid: i for i, tid in enumerate(vocab.words)}
    ident = np.zeros((n, lanes))
    for tid in range(n):
        if tid in word_of:
            ident[tid, word_of[tid]] = 1.0
            continue
        anchor = rng.integers(len(vocab.words))
        private = rng.normal(size=spare)
        private /= np.linalg.norm(private)
        ident[tid, anchor] = shape.anchor
        ident[tid, len(vocab.words) :] = np.sqrt(1 - shape.anchor**2) * private
    rotation, _ = np.linalg.qr(rng.normal(size=(lanes, lanes)))
    scale = np.sqrt(lanes)  # unit-variance lanes, so RMS norm leaves sizes alone
    bias_lane = 1.0

    embed = np.zeros((n, d))
    embed[:, 0] = bias_lane
    embed[:, 1:] = scale * ident @ rotation.T

    # After the final RMS norm the hidden state is ~ the current token's embedding; the
    # successor's output row is the predecessor's direction scaled to `margin`.
    rms = np.sqrt((bias_lane**2 + scale**2) / d)
    out = np.zeros((n, d))
    gain = shape.margin * rms / scale
    for i, tid in enumerate(vocab.words):
        prev = vocab.words[i - 1]
        out[tid, 1:] = gain * embed[prev, 1:] / scale
    banned = np.ones(n, dtype=bool)
    banned[vocab.words] = False
    out[:, 0] = np.where(banned, shape.ban, 0.0) * rms / bias_lane

    tensors: dict[str, np.ndarray] = {"token_embd.weight": embed}
    head_dim = d // shape.heads
    for layer in range(shape.layers):
        p = f"blk.{layer}."
        for name, rows, cols in (
            ("attn_q", d, d),
            ("attn_k", head_dim * shape.heads, d),
            ("attn_v", head_dim * shape.heads, d),
            ("attn_output", d, d),
            ("ffn_gate", shape.ffn, d),
            ("ffn_up", shape.ffn, d),
            ("ffn_down", d, shape.ffn),
        ):
            w = rng.normal(scale=shape.noise, size=(rows, cols))
            if name in ("attn_output", "ffn_down"):
                w[0, :] = 0.0  # never write to the bias lane
            tensors[p + name + ".weight"] = w
        tensors[p + "attn_norm.weight"] = np.ones(d)
        tensors[p + "ffn_norm.weight"] = np.ones(d)
    tensors["output_norm.weight"] = np.ones(d)
    tensors["output.weight"] = out
    return {k: v.astype(f32) for k, v in tensors.items()}


def write_model(path: str | Path, shape: Shape | None = None, name: str = "tiny-llama2") -> Path:
    """Write the model to `path` and return it."""
    if gguf is None:
        raise RuntimeError("the 'gguf' package is needed: pip install gguf")
    shape = shape or Shape()
    vocab = build_vocab()
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab.size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(LLAMA2_CHAT_TEMPLATE)
    for tensor_name, array in _weights(shape, vocab).items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    out = write_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama2.gguf")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
