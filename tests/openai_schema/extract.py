"""Extract the OpenAI response schemas the gateway's answers must satisfy from OpenAI's
OpenAPI document, as one JSON Schema 2020-12 document with a `components.schemas` map.

    # from a checkout (or a bare clone) of github.com/openai/openai-openapi, at a revision:
    python tests/openai_schema/extract.py --repo ../openai-openapi --rev <commit>
    # from a downloaded openapi.json, naming what it is:
    python tests/openai_schema/extract.py --file openapi.json --commit <sha> --date <iso date>
    # add --check to compare with the vendored file instead of writing it

What it does (nothing else is changed):
- takes the ROOTS and every component they reach through `$ref`, transitively, verbatim;
- converts the OpenAPI 3.0 keyword `nullable` (still present in a few places of the 3.1
  document, where a JSON Schema validator would silently ignore it) into JSON Schema:
  `{…, "nullable": true}` becomes `{<annotations>, "anyOf": [{…}, {"type": "null"}]}`, the
  form the rest of the document uses; `nullable: false` is dropped;
- refuses anything it cannot carry faithfully: a `$ref` outside `#/components/schemas/`,
  OpenAPI 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum`.

`$ref`s stay `#/components/schemas/<Name>`: they resolve against the output document.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
)
REPOSITORY = "https://github.com/openai/openai-openapi"
SOURCE_PATH = "openapi.json"
REF_PREFIX = "#/components/schemas/"
OUT = Path(__file__).with_name("openai-components.json")

# Keywords whose value is a map of name → schema, one schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "additionalItems",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
# Kept on the outer schema when `nullable` is converted: they describe, not constrain.
_ANNOTATIONS = (
    "title",
    "description",
    "default",
    "deprecated",
    "example",
    "examples",
    "readOnly",
    "writeOnly",
    "externalDocs",
)


def refs(schema: Any) -> list[str]:
    """Every `$ref` value in a schema, anywhere."""
    out: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                out.append(value)
            else:
                out.extend(refs(value))
    elif isinstance(schema, list):
        for value in schema:
            out.extend(refs(value))
    return out


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """The roots and every component they reach, sorted by name."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in schemas:
            raise SystemExit(f"component {name!r} is not in the document")
        seen.add(name)
        for ref in refs(schemas[name]):
            if not ref.startswith(REF_PREFIX):
                raise SystemExit(f"{name}: $ref {ref!r} is not a component schema")
            todo.append(ref[len(REF_PREFIX) :])
    return sorted(seen)


def convert(schema: Any, path: str, converted: list[str]) -> Any:
    """A schema with OpenAPI's `nullable` turned into JSON Schema (see the module text);
    `converted` collects the JSON pointer of each schema that allowed null that way."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        at = f"{path}/{key}"
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {
                name: convert(sub, f"{at}/{name}", converted) for name, sub in value.items()
            }
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = convert(value, at, converted)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [convert(sub, f"{at}/{i}", converted) for i, sub in enumerate(value)]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            raise SystemExit(f"{at}: OpenAPI 3.0 boolean {key} is not carried over")
        else:
            out[key] = value  # a keyword's value (enum, const, default, x-…): verbatim
    nullable = out.pop("nullable", None)
    if nullable is not True:
        return out
    converted.append(path)
    outer = {k: out.pop(k) for k in list(out) if k in _ANNOTATIONS or k.startswith("x-")}
    return {**outer, "anyOf": [out, {"type": "null"}]}


def extract(document: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    names = closure(schemas, ROOTS)
    converted: list[str] = []
    picked = {n: convert(schemas[n], f"#/components/schemas/{n}", converted) for n in names}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            "OpenAI's response schemas, extracted by tests/openai_schema/extract.py "
            "(see README.md); licence: LICENSE (MIT)."
        ),
        "x-source": {
            "repository": REPOSITORY,
            **source,
            "path": SOURCE_PATH,
            "openapi": document.get("openapi"),
            "info.version": document.get("info", {}).get("version"),
            "roots": list(ROOTS),
            "nullable_converted": converted,
        },
        "components": {"schemas": picked},
    }


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--repo", help="a clone of openai/openai-openapi (a bare one will do)")
    src.add_argument("--file", help="an openapi.json (give --commit and --date)")
    ap.add_argument("--rev", default="HEAD", help="with --repo: the revision (default HEAD)")
    ap.add_argument("--commit", help="with --file: the commit it came from")
    ap.add_argument("--date", help="with --file: that commit's date")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = ap.parse_args(argv)
    if args.repo:
        commit = _git(args.repo, "rev-parse", f"{args.rev}^{{commit}}").strip()
        date = _git(args.repo, "log", "-1", "--format=%cI", commit).strip()
        text = _git(args.repo, "show", f"{commit}:{SOURCE_PATH}")
    else:
        if not (args.commit and args.date):
            ap.error("--file needs --commit and --date")
        commit, date = args.commit, args.date
        text = Path(args.file).read_text(encoding="utf-8")
    doc = extract(json.loads(text), {"commit": commit, "date": date})
    out = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == out
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.out.write_text(out, encoding="utf-8")
    n = len(doc["components"]["schemas"])
    conv = doc["x-source"]["nullable_converted"]
    print(f"{args.out}: {n} components from {commit} ({date}); nullable converted at:")
    for p in conv:
        print("  " + p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
