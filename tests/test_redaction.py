"""The redaction helper: every form an echo shows a secret in, overlaps, empties."""

from __future__ import annotations

import json

import orjson
from yarl import URL

from gateway.redact import MARK, Redactor, credential, forms

KEY = "sk-Key/with+odd=chars&more?x:y@z é"


def test_raw_text_and_bytes() -> None:
    r = Redactor(["sk-abcdefgh"])
    assert r.text("key sk-abcdefgh and sk-abcdefgh.") == f"key {MARK} and {MARK}."
    assert r.data(b"key=sk-abcdefgh;") == b"key=" + MARK.encode() + b";"


def test_nothing_to_hide_returns_the_same_object() -> None:
    r = Redactor(["sk-abcdefgh"])
    text, data = "all clear", b"all clear"
    assert r.text(text) is text and r.data(data) is data


def test_url_encoded_as_we_send_it_and_as_others_write_it() -> None:
    r = Redactor([KEY])
    # What yarl (our upstream URLs) puts on the wire, in a query echo.
    sent = URL("http://h/p").with_query({"api_key": KEY}).raw_query_string
    assert r.text(sent) == f"api_key={MARK}"
    for echoed in forms(KEY):
        assert r.text(f"<p>{echoed}</p>") == f"<p>{MARK}</p>", echoed
    fully = "sk-Key%2Fwith%2Bodd%3Dchars%26more%3Fx%3Ay%40z%20%C3%A9"
    lower_hex = "sk-Key%2fwith%2bodd%3dchars%26more%3fx%3ay%40z%20%c3%a9"
    assert r.text(fully) == MARK and r.text(lower_hex) == MARK
    assert r.text(fully.replace("%20", "+")) == MARK


def test_json_escaped_in_a_body_echo() -> None:
    key = 'sk-"quoted"\\back/slash\té'
    r = Redactor([key])
    assert r.text(orjson.dumps({"k": key}).decode()) == '{"k":"' + MARK + '"}'
    assert r.text(json.dumps({"k": key})) == '{"k": "' + MARK + '"}'  # \u00e9 for é
    assert r.text(json.dumps(key).replace("/", "\\/")) == f'"{MARK}"'
    # Bytes, as the pass-through body is redacted.
    assert r.data(orjson.dumps({"echo": {"api_key": key}})) == b'{"echo":{"api_key":"[redacted]"}}'


def test_json_escaped_twice_our_body_quoted_in_a_json_error_page() -> None:
    key = 'sk-"q"/\\x'
    sent = json.dumps({"api_key": key})  # the body we sent upstream
    page = json.dumps({"error": "bad request: " + sent}).replace("/", "\\/")
    assert "sk-" not in Redactor([key]).text(page)
    # And a query echo inside a JSON page: URL-encoded, then JSON-escaped.
    query = URL("http://h/p").with_query({"k": key}).raw_query_string
    assert "sk-" not in Redactor([key]).text(json.dumps({"url": query}).replace("/", "\\/"))


def test_overlapping_and_nested_secrets_are_hidden_whole() -> None:
    r = Redactor(["abc12345", "12345xyz"])
    assert r.text("--abc12345xyz--") == f"--{MARK}--"
    # One secret inside another (a header value and its token).
    r = Redactor(["Bearer tok-12345678", "tok-12345678"])
    assert r.text("Authorization: Bearer tok-12345678") == f"Authorization: {MARK}"
    assert r.text("tok-12345678 alone") == f"{MARK} alone"
    # A secret that overlaps itself.
    r = Redactor(["abab-abab"])
    assert r.text("xabab-abab-abab") == f"x{MARK}"


def test_empty_secrets_are_ignored() -> None:
    r = Redactor(["", ""])
    assert not r and r.text("anything") == "anything"
    assert forms("") == set()
    assert Redactor(["", "sk-abcdefgh"]).text("sk-abcdefgh") == MARK


def test_with_extra_adds_per_request_secrets_without_touching_the_route() -> None:
    route = Redactor(["route-secret-1"])
    assert route.with_extra(()) is route and route.with_extra(("", "route-secret-1")) is route
    both = route.with_extra(("client-key-123",))
    assert both.text("route-secret-1 client-key-123") == f"{MARK} {MARK}"
    assert route.text("client-key-123") == "client-key-123"


def test_client_credential() -> None:
    assert credential("Bearer sk-client-123") == "sk-client-123"
    assert credential("Basic dXNlcjpwYXNzd29yZA==") == "dXNlcjpwYXNzd29yZA=="
    assert credential("  raw-key-without-scheme ") == "raw-key-without-scheme"
    # An SDK's placeholder is no secret: hiding "x" would cut it out of every word.
    assert credential("Bearer x") == "" and credential("EMPTY") == ""
