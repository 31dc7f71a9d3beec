"""Write (or check) the PrometheusRule whose groups are deploy/prometheus/alerts.yaml's.

The rules live once, in alerts.yaml (promtool-tested there); the prometheus-operator
needs them wrapped in a PrometheusRule. The groups are copied as text, comments and
all, indented under `spec:`, so the two files read alike.

    python deploy/k8s/tools/prometheusrule.py           # rewrite the PrometheusRule
    python deploy/k8s/tools/prometheusrule.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
OUTPUT = ROOT / "deploy" / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/k8s/tools/prometheusrule.py:
# edit alerts.yaml and rerun the tool (CI fails when this file is out of date).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: llama-gateway
  labels:
    app.kubernetes.io/name: llama-gateway
spec:
"""


def render(alerts_text: str) -> str:
    lines = alerts_text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise SystemExit(f"{ALERTS}: no top-level 'groups:' line") from None
    # Blank lines stay empty: indenting them would leave trailing whitespace.
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = ap.parse_args(argv)
    want = render(ALERTS.read_text(encoding="utf-8"))
    if not args.check:
        OUTPUT.write_text(want, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
        return 0
    have = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if have == want:
        print(f"{OUTPUT.relative_to(ROOT)}: in step with {ALERTS.relative_to(ROOT)}")
        return 0
    diff = difflib.unified_diff(
        have.splitlines(keepends=True), want.splitlines(keepends=True), "committed", "generated"
    )
    sys.stderr.writelines(diff)
    print(
        f"{OUTPUT.relative_to(ROOT)} is out of date: run python deploy/k8s/tools/prometheusrule.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
