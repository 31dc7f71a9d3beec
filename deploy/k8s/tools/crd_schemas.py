"""The prometheus-operator custom resources, checked against their CRDs' schemas offline.

kubernetes-validate knows only built-in kinds; ServiceMonitor and PrometheusRule are
checked here against the `openAPIV3Schema` of their CustomResourceDefinitions, kept in
deploy/k8s/crds/ (provenance and licence: deploy/k8s/crds/README.md).

    python deploy/k8s/tools/crd_schemas.py extract CRD.yaml OUT.json   # refresh a schema
    python deploy/k8s/tools/crd_schemas.py validate RENDERED.yaml ...   # check the CRs

Like the API server with kubectl's default `--validate=strict`, unknown fields are
errors: every object schema that lists its properties and does not say
`x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`. CEL rules
(`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

CRDS = Path(__file__).resolve().parents[1] / "crds"
# apiVersion, kind → the schema file for it.
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.v1.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.v1.schema.json",
}


def extract(crd_path: str, out_path: str) -> int:
    with open(crd_path, encoding="utf-8") as fh:
        crd = yaml.safe_load(fh)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    Path(out_path).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"{out_path}: openAPIV3Schema of {crd['metadata']['name']} v1")
    return 0


def strict(schema: Any) -> Any:
    """A copy of `schema` in which unknown fields are errors."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validator(api_version: str, kind: str) -> Draft7Validator:
    name = SCHEMAS[(api_version, kind)]
    schema = json.loads((CRDS / name).read_text(encoding="utf-8"))
    return Draft7Validator(strict(schema))


def problems(obj: dict[str, Any]) -> list[str]:
    v = validator(str(obj.get("apiVersion")), str(obj.get("kind")))
    out = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if not (obj.get("metadata") or {}).get("name"):
        out.append("metadata.name: required")
    return out


def validate(paths: list[str]) -> int:
    checked = failed = 0
    canary: dict[str, Any] | None = None
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
        for obj in docs:
            if (obj.get("apiVersion"), obj.get("kind")) not in SCHEMAS:
                continue
            checked += 1
            name = f"{path}: {obj['kind']}/{obj['metadata'].get('name')}"
            errs = problems(obj)
            if errs:
                failed += 1
                print(f"FAIL {name}", file=sys.stderr)
                for e in errs:
                    print(f"  {e}", file=sys.stderr)
            else:
                print(f"ok   {name}")
                canary = canary or obj
    if canary is not None:
        # A validator that accepts anything would pass silently: prove it rejects an
        # unknown field and a wrongly typed one.
        for mutate in (_unknown_field, _wrong_type):
            bad = copy.deepcopy(canary)
            mutate(bad)
            if not problems(bad):
                print(f"FAIL canary {mutate.__name__} was accepted", file=sys.stderr)
                failed += 1
    print(f"custom resources validated against CRD schemas: {checked}, failed: {failed}")
    if checked == 0:
        print("no custom resources found: nothing was validated", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _unknown_field(obj: dict[str, Any]) -> None:
    obj["spec"]["notAField"] = True


def _wrong_type(obj: dict[str, Any]) -> None:
    obj["spec"][next(iter(obj["spec"]))] = 12345


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "extract":
        return extract(argv[1], argv[2])
    if len(argv) >= 2 and argv[0] == "validate":
        return validate(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
