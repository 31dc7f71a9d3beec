"""Hostile config input: every bad file or value is one clean ConfigError naming the key
path (never a traceback, never a secret), and the CLI prints it and exits 1.

Issue 15 finding 6: `.nan` passed range checks, CR/LF in `model.name` passed `check`,
control characters in `auth.header_value` were accepted, and a 5000-digit integer, a
50k-deep document and a non-UTF-8 file gave tracebacks."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_kit import doc, target

from gateway.config import Config, ConfigError, load_file, load_text, parse
from gateway.config._load import MAX_DEPTH

SECRET = "s3cr3t-t0ken-value"
CHAT = "routes[0].config.targets[0]"
OPTS = f"{CHAT}.model.options"


def with_options(**options: Any) -> dict[str, Any]:
    t = target()
    t["model"]["options"].update(options)
    return doc(t)


def errors_of(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(raw, env or {})
    return info.value.errors


def text_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, {})
    return info.value.errors


# ---- numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("where", "raw"),
    [
        (f"{OPTS}.temperature", lambda v: with_options(temperature=v)),
        (f"{OPTS}.top_p", lambda v: with_options(top_p=v)),
        (f"{OPTS}.input_cost", lambda v: with_options(input_cost=v)),
        (f"{OPTS}.max_tokens", lambda v: with_options(max_tokens=v)),
        (f"{CHAT}.weight", lambda v: doc(target(weight=v))),
        ("server.drain_timeout", lambda v: {**doc(), "server": {"drain_timeout": v}}),
        ("server.keepalive_timeout", lambda v: {**doc(), "server": {"keepalive_timeout": v}}),
        (
            "routes[0].config.balancer.healthchecks.active.timeout",
            lambda v: doc(balancer={"healthchecks": {"active": {"timeout": v}}}),
        ),
        (
            "routes[0].config.balancer.queue.timeout",
            lambda v: doc(balancer={"queue": {"timeout": v}}),
        ),
    ],
)
def test_nan_and_infinity_are_refused_everywhere(where: str, raw: Any, bad: float) -> None:
    assert errors_of(raw(bad)) == [f"{where}: must be a finite number"]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_from_the_environment_is_refused(text: str) -> None:
    raw = with_options(temperature="${T}")
    assert errors_of(raw, {"T": text}) == [f"{OPTS}.temperature: must be a finite number"]
    (err,) = errors_of(doc(), {"LLAMA_GATEWAY_DRAIN_TIMEOUT": text})
    assert err.startswith("LLAMA_GATEWAY_DRAIN_TIMEOUT: must be a finite number, got ")


def test_yaml_nan_in_a_file() -> None:
    text = yaml.safe_dump(with_options(temperature=0.5)).replace("0.5", ".nan")
    assert text_errors(text) == [f"{OPTS}.temperature: must be a finite number"]


def test_huge_integers_are_refused_without_overflow() -> None:
    assert errors_of({**doc(), "server": {"drain_timeout": 10**400}}) == [
        "server.drain_timeout: value is too large (at most 9007199254740992)"
    ]
    assert errors_of(with_options(temperature=10**400)) == [
        f"{OPTS}.temperature: value must be >= 0 and <= 5"
    ]
    assert errors_of(with_options(max_tokens=2**64)) == [
        f"{OPTS}.max_tokens: value must be > 0 and <= 2147483647"
    ]
    # From the environment: not a number at all once it is longer than any sane one.
    (err,) = errors_of(doc(), {"LLAMA_GATEWAY_PORT": "9" * 5000})
    assert err.startswith("LLAMA_GATEWAY_PORT: must be an integer, got '9999")
    assert len(err) < 200


def test_a_5000_digit_integer_in_yaml_is_one_clean_error() -> None:
    text = yaml.safe_dump(doc()) + "server: {port: " + "1" * 5000 + "}\n"
    (err,) = text_errors(text)
    assert (
        err.startswith("invalid YAML at line ")
        and "integer with 5000 characters is too long" in err
    )


@pytest.mark.parametrize("scalar", ["0x_", "0b_", "2001-02-30", "2001-13-01"])
def test_scalars_pyyaml_cannot_convert(scalar: str) -> None:
    (err,) = text_errors(f"server: {{port: {scalar}}}\n")
    assert err.startswith("invalid YAML at line 1, column 16: not a valid ")


# ---- strings that reach the wire -----------------------------------------------------


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        (f"{CHAT}.model.name", lambda v: doc(target(model={**target()["model"], "name": v}))),
        (
            f"{CHAT}.model.model_alias",
            lambda v: doc(target(model={**target()["model"], "model_alias": v})),
        ),
        (f"{CHAT}.name", lambda v: doc(target(name=v))),
        ("routes[0].name", lambda v: {"routes": [{**doc()["routes"][0], "name": v}]}),
        ("routes[0].paths[0]", lambda v: {"routes": [{**doc()["routes"][0], "paths": [v]}]}),
        ("server.host", lambda v: {**doc(), "server": {"host": v}}),
        (
            f"{CHAT}.auth.param_name",
            lambda v: doc(
                target(auth={"param_name": v, "param_value": "k", "param_location": "query"})
            ),
        ),
        (
            "routes[0].config.balancer.healthchecks.active.http_path",
            lambda v: doc(balancer={"healthchecks": {"active": {"http_path": v}}}),
        ),
        ("frontends.openai.prefix", lambda v: {**doc(), "frontends": {"openai": {"prefix": v}}}),
    ],
)
@pytest.mark.parametrize("bad", ["\r\n", "\x01", "\x7f", "\x85", "\t"])
def test_control_characters_are_refused_where_a_string_reaches_the_wire(
    where: str, raw: Any, bad: str
) -> None:
    value = f"/a{bad}b"
    (err,) = errors_of(raw(value))
    assert err.startswith(f"{where}: must not contain control characters (found ")
    assert "at index 2" in err


def test_model_name_with_crlf_fails_check() -> None:
    """The finding: it passed `check`, then every answer dropped the connection."""
    raw = doc(target(model={**target()["model"], "name": "llama2\r\nX-Injected: 1"}))
    assert errors_of(raw) == [
        f"{CHAT}.model.name: must not contain control characters (found CR at index 6)"
    ]


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (f"Bearer {SECRET}\x01", "at the end"),
        (f"Bearer {SECRET}\x7f", "at the end"),
        (f"Bearer \x85{SECRET}", "inside the value"),
        (f"Bearer {SECRET}\r\nX-Evil: 1", "inside the value"),
        (f"Bearer {SECRET}\n", "at the end: a secret file's trailing newline?"),
    ],
)
def test_auth_values_with_control_characters_are_refused_without_echo(
    value: str, where: str
) -> None:
    (err,) = errors_of(doc(target(auth={"header_name": "Authorization", "header_value": value})))
    assert err.startswith(f"{CHAT}.auth.header_value: must not contain control characters (found ")
    assert err.endswith(f" {where})") and SECRET not in err
    (err,) = errors_of(
        doc(target(auth={"param_name": "key", "param_value": value, "param_location": "body"}))
    )
    assert err.startswith(f"{CHAT}.auth.param_value: must not contain") and SECRET not in err


def test_a_secret_from_the_environment_is_checked_after_substitution() -> None:
    raw = doc(target(auth={"header_name": "Authorization", "header_value": "Bearer ${KEY}"}))
    (err,) = errors_of(raw, {"KEY": SECRET + "\n"})
    assert "trailing newline" in err and SECRET not in err


def test_a_tab_is_allowed_in_a_header_value_only() -> None:
    raw = doc(target(auth={"header_name": "X-Key", "header_value": "a\tb"}))
    assert parse(raw, {}).routes[0].targets[0].auth.header_value == "a\tb"


@pytest.mark.parametrize("key", ["hash_on_header", "priority_header"])
def test_header_names_must_be_tokens(key: str) -> None:
    balancer: dict[str, Any] = {key: "X Bad\r\n"}
    if key == "priority_header":
        balancer = {"queue": balancer}
    sub = "queue." if key == "priority_header" else ""
    assert errors_of(doc(balancer=balancer)) == [
        f"routes[0].config.balancer.{sub}{key}: must be a valid HTTP header name"
    ]


def test_names_are_bounded() -> None:
    (err,) = errors_of(doc(target(name="n" * 300)))
    assert err == f"{CHAT}.name: must be at most 256 characters long (is 300)"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1/a\r\nb", "must not contain control characters (found CR at index 12)"),
        ("http://h:1/a\tb", "must not contain control characters (found TAB at index 12)"),
        ("http://h:1/a b", "must not contain spaces (write a space in the path as %20)"),
        ("http://h:1/a\u00a0b", "must not contain spaces (write a space in the path as %20)"),
        ("http://a<b>:1/", "invalid host name (letters, digits, '-', '.' and '_' only)"),
        ("http://a\u200b:1/", "invalid host: "),
        ("http://[::g]:1/", "invalid URL: "),
    ],
)
def test_upstream_url_must_be_sendable(url: str, message: str) -> None:
    (err,) = errors_of(with_options(upstream_url=url))
    assert err.startswith(f"{OPTS}.upstream_url: {message}")


def test_unicode_hosts_and_ipv6_still_work() -> None:
    for url in ("http://bücher.example:1/x", "http://[::1]:8080/x", "http://ollama_1:11434/"):
        parse(with_options(upstream_url=url), {})


def test_unknown_keys_are_echoed_escaped_and_cut() -> None:
    raw = {**doc(), "\x1b[2Jevil": 1, "k" * 500: 2}
    errs = errors_of(raw)
    assert errs[0] == "'\\x1b[2Jevil': unknown key"
    assert errs[1].endswith("…: unknown key") and len(errs[1]) < 100


@pytest.mark.parametrize("pattern", ["~" + "(" * 2000 + ")" * 2000, "~a{99999999999999999999}"])
def test_hostile_route_regexes(pattern: str) -> None:
    raw = {"routes": [{**doc()["routes"][0], "paths": [pattern]}]}
    (err,) = errors_of(raw)
    assert err.startswith("routes[0].paths[0]: invalid regex: ")


def test_workers_digit_lookalikes() -> None:
    assert errors_of({**doc(), "server": {"workers": "²"}}) == [
        "server.workers: must be an integer from 1 to 256, or auto"
    ]


# ---- the document's shape ------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[" * 50_000 + "]" * 50_000, "{a: " * 50_000 + "1" + "}" * 50_000, "- " * 50_000 + "x"]
)
def test_50k_deep_yaml(text: str) -> None:
    (err,) = text_errors(text)
    assert err.startswith("invalid YAML at line 1, column ")
    assert err.endswith(f"nested more than {MAX_DEPTH} levels deep")


def test_deep_through_aliases() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 200)]
    (err,) = text_errors("\n".join(lines))
    assert err.startswith("a") and f"nested more than {MAX_DEPTH} levels deep" in err


def test_recursive_alias() -> None:
    assert text_errors("routes: &a [*a]") == ["routes[0]: refers to itself (a recursive alias)"]


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (err,) = text_errors("\n".join(lines))
    assert "too large: more than 1000000 values once aliases are expanded" in err


def test_chained_merge_keys() -> None:
    """PyYAML flattens merges recursively, but an alias names an earlier (already
    flattened) node, so a long chain stays shallow."""
    lines = ["m0: &m0 {x: 1}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}}}" for i in range(1, 5000)]
    errs = text_errors("\n".join(lines))
    assert len(errs) == 5001 and all(e.endswith(": unknown key") for e in errs[:5000])


def test_deep_and_cyclic_data_given_to_parse() -> None:
    deep: list[Any] = []
    for _ in range(50_000):
        deep = [deep]
    (err,) = errors_of({"routes": deep})
    assert err.startswith("routes[0][0]") and "nested more than" in err
    cyclic: dict[str, Any] = {}
    cyclic["routes"] = [cyclic]
    assert errors_of(cyclic) == ["routes[0]: refers to itself (a recursive alias)"]


def test_yaml_errors_do_not_quote_the_line() -> None:
    """PyYAML's snippet of the offending line could hold a secret."""
    text = yaml.safe_dump(doc()) + f'x: "Bearer {SECRET}\n'
    (err,) = text_errors(text)
    assert err.startswith("invalid YAML at line ") and SECRET not in err
    # `*` typed before a value makes it an alias, which PyYAML's message would name.
    text = yaml.safe_dump(doc()) + f"x: *{SECRET}\n"
    assert text_errors(text) == ["invalid YAML at line 15, column 4: found undefined alias '…'"]
    assert text_errors("a: [\t]") == [
        "invalid YAML at line 1, column 5: found character '\\t' that cannot start any token "
        "(while scanning for the next token)"
    ]


def test_a_key_given_twice_is_an_error_not_a_silent_override() -> None:
    """PyYAML keeps the last of two equal keys: a second `auth:` block (or a pasted
    `timeout`) would silently replace the first."""
    text = yaml.safe_dump(doc(target(auth={"header_name": "x-key", "header_value": SECRET})))
    twice = text.replace("    - auth:\n", "    - auth: {}\n      auth:\n", 1)
    assert twice != text
    (err,) = text_errors(twice)
    assert (
        err.startswith("invalid YAML at line ") and ": duplicate key `auth` (first at line " in err
    )
    assert text_errors("a: {k: 1, k: 2}") == [
        "invalid YAML at line 1, column 11: duplicate key `k` (first at line 1, column 5)"
    ]
    # A key that could be anything (a secret pasted as a key) is not quoted.
    (err,) = text_errors(f"'Bearer {SECRET}': 1\n'Bearer {SECRET}': 2\n")
    assert SECRET not in err and "duplicate key (not shown)" in err


def test_a_key_overriding_a_merged_one_is_fine() -> None:
    base = yaml.safe_dump(doc())
    text = "defaults: &d {read_timeout: 1000, retries: 1}\n" + base.replace(
        "    targets:\n", "    balancer:\n      <<: *d\n      retries: 3\n    targets:\n", 1
    )
    raw = yaml.safe_load(text)
    assert raw["routes"][0]["config"]["balancer"]["retries"] == 3
    (err,) = text_errors(text)
    assert err == "defaults: unknown key"  # the anchor's home, not the override, is refused


# ---- files ---------------------------------------------------------------------------


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(b"routes:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_file(str(f))
    assert info.value.errors == [f"{f}: not UTF-8 text (byte 0xe9 at offset 21)"]
    f.write_text(yaml.safe_dump(doc()), encoding="utf-16")
    with pytest.raises(ConfigError) as info:
        load_file(str(f))
    assert info.value.errors[0].endswith("it looks like UTF-16, save it as UTF-8)")


def test_bom_and_nul(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(doc()).encode())
    assert isinstance(load_file(str(f)), Config)
    f.write_bytes(b"routes: [a\x00]\n")
    with pytest.raises(ConfigError) as info:
        load_file(str(f))
    assert info.value.errors == [
        "invalid YAML at line 1, column 11: character U+0000 is not allowed "
        "(write it as an escape in a double-quoted string)"
    ]


def test_unreadable_paths(tmp_path: Path) -> None:
    for path in (str(tmp_path), str(tmp_path / "missing.yaml"), "a\0b"):
        with pytest.raises(ConfigError):
            load_file(path)


# ---- the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"routes: [\xff]\n", "not UTF-8 text (byte 0xff at offset 9)"),
        (b"[" * 50_000 + b"]" * 50_000, f"nested more than {MAX_DEPTH} levels deep"),
        (
            yaml.safe_dump(doc(target(model={**target()["model"], "name": "m\r\n"}))).encode(),
            "model.name: must not contain control characters (found CR at index 1)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check", "serve"])
def test_cli_prints_the_error_and_exits_1(
    tmp_path: Path, command: str, content: bytes, message: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", command, "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"{f}: invalid configuration:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
