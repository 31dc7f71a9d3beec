"""Bytes → text → YAML → plain data, for any input: every failure is one ConfigError
with a position or a key path, never a traceback.

What it guards against, and why here: a file that is not UTF-8, a YAML document nested
so deeply that PyYAML's recursive composer overflows the stack, integers longer than
Python's int-from-string limit (4300 digits) and dates that do not exist (both raise
ValueError inside PyYAML's constructors), and, through anchors and aliases, data that is
deep, self-referencing or enormous once expanded although its text is small. After
`check_shape()` the validator (and everything after it) may walk the data freely.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from .schema import ConfigError

MAX_FILE = 16 * 1024 * 1024  # bytes; a real config is a few KiB
MAX_DEPTH = 64  # levels; the deepest real key (…healthchecks.active.healthy.http_statuses[0]) is 8
MAX_NODES = 1_000_000  # values once aliases are expanded: far more than any real config
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_file(path: str) -> str:
    """The file's text, refusing what is not UTF-8 (a leading BOM is allowed)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except ValueError as exc:  # a NUL in the path
        raise ConfigError([f"{path!r}: cannot read: {exc}"]) from None
    if len(data) > MAX_FILE:
        raise ConfigError([f"{path}: too large (over {MAX_FILE} bytes)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = "; it looks like UTF-16, save it as UTF-8" if data[:2] in _UTF16_BOMS else ""
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}{hint})"]
        ) from None
    return text.removeprefix("\ufeff")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _shown_key(key: str) -> str:
    """A key as an error may show it: a config key name, or nothing (a mapping key may
    be anything, and the error must not quote what could be a secret)."""
    return f"`{key}`" if _PLAIN_KEY.fullmatch(key) else "(not shown)"


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit: the composer recurses once per level, so a
    50,000-deep `[[[…]]]` would otherwise end in RecursionError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(
                    problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        """PyYAML keeps the last of two equal keys without a word: two `auth:` blocks
        in one target would silently drop the first. A key given twice in one mapping
        is an error; a key that overrides one from a merge (`<<: *defaults`) is not."""
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], ScalarNode] = {}
            for key, _ in node.value:
                if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                earlier = first.setdefault((key.tag, key.value), key)
                if earlier is not key:
                    at = earlier.start_mark
                    raise ConstructorError(
                        f"first at line {at.line + 1}, column {at.column + 1}" if at else None,
                        None,
                        f"duplicate key {_shown_key(key.value)}",
                        key.start_mark,
                    )
        return super().construct_mapping(node, deep)  # type: ignore[arg-type]


def _guarded(kind: str, construct: Any) -> Any:
    """A SafeConstructor scalar method whose own exceptions (ValueError for an integer
    over the int-str limit, `0x_` or 2001-02-30; IndexError, KeyError, AttributeError
    for an empty `!!int`, `!!bool` or `!!timestamp`) become a positioned YAML error."""

    def constructor(loader: SafeConstructor, node: Node) -> Any:
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except Exception:
            value = str(getattr(node, "value", ""))
            what = (
                f"{kind} with {len(value)} characters is too long"
                if len(value) > 64
                else f"not a valid {kind}"
            )
            raise ConstructorError(None, None, what, node.start_mark) from None

    return constructor


for _tag, _kind, _method in (
    ("int", "integer", SafeConstructor.construct_yaml_int),
    ("float", "number", SafeConstructor.construct_yaml_float),
    ("bool", "boolean", SafeConstructor.construct_yaml_bool),
    ("timestamp", "date", SafeConstructor.construct_yaml_timestamp),
):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _guarded(_kind, _method))


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


# A quoted fragment PyYAML's messages may keep: one character (or its escape), or a
# token name like '<block end>'. Anything longer (an alias, anchor or tag name) is text
# from the file, which may be part of a secret: `*` typed before one makes it an alias.
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'" + r'|"((?:[^"\\]|\\.)*)"')
_KEEP = re.compile(r"(?:.|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|\\U[0-9a-f]{8}|\\.|<[a-z ]+>)", re.S)


def _unquoted(message: str) -> str:
    def keep(m: re.Match[str]) -> str:
        inner = m[1] if m[1] is not None else m[2]
        return m[0] if _KEEP.fullmatch(inner) else "'…'"

    return _QUOTED.sub(keep, message)


def _describe(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's error without its snippet of the offending line, nor quoted names from
    it: that line may hold a secret (an unterminated `header_value: "Bearer …`)."""
    if isinstance(exc, yaml.reader.ReaderError):
        ch = exc.character
        code = ch if isinstance(ch, int) else ord(ch) if isinstance(ch, str) and ch else 0
        return (
            f"invalid YAML at {_position(text, exc.position)}: character U+{code:04X} is not "
            "allowed (write it as an escape in a double-quoted string)"
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "syntax error"
        if exc.problem and exc.context:
            cm = exc.context_mark
            since = f" from line {cm.line + 1}" if cm is not None and cm is not mark else ""
            what += f" ({exc.context}{since})"
        return f"invalid YAML{where}: {_unquoted(what)}"
    return f"invalid YAML: {_unquoted(str(exc))}"


def load_yaml(text: str) -> Any:
    """One YAML document as plain data (SafeLoader's types)."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([_describe(exc, text)]) from None
    except RecursionError:
        # Merge keys (`<<: *a`) chained thousands deep: PyYAML flattens them recursively.
        raise ConfigError(["invalid YAML: nested too deeply (merge keys or aliases)"]) from None


class _Shape(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []


def check_shape(raw: Any) -> None:
    """Refuse data that is nested deeper than MAX_DEPTH, refers to itself, or holds more
    than MAX_NODES values once shared parts (YAML aliases) are counted at every place
    they appear. Linear in the distinct containers: each is measured once."""
    try:
        _measure(raw, 1, {}, set())
    except _Shape as exc:
        path = "".join(reversed(exc.path)).removeprefix(".")
        raise ConfigError([f"{path}: {exc.message}" if path else exc.message]) from None


def _measure(
    node: Any, level: int, memo: dict[int, tuple[int, int]], open_: set[int]
) -> tuple[int, int]:
    """(height, expanded size) of `node` at `level`."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list | tuple):
        items = enumerate(node)
    else:
        return 0, 1
    key = id(node)
    seen = memo.get(key)
    if seen is not None:
        if level + seen[0] - 1 > MAX_DEPTH:
            raise _Shape(f"nested more than {MAX_DEPTH} levels deep (through an alias)")
        return seen
    if key in open_:
        raise _Shape("refers to itself (a recursive alias)")
    if level > MAX_DEPTH:
        raise _Shape(f"nested more than {MAX_DEPTH} levels deep")
    open_.add(key)
    height = size = 1
    for k, child in items:
        try:
            h, s = _measure(child, level + 1, memo, open_)
        except _Shape as exc:
            exc.path.append(f"[{k}]" if isinstance(node, list | tuple) else f".{k}")
            raise
        height = max(height, h + 1)
        size += s
        if size > MAX_NODES:
            raise _Shape(f"too large: more than {MAX_NODES} values once aliases are expanded")
    open_.discard(key)
    memo[key] = (height, size)
    return height, size
