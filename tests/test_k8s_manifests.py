"""deploy/k8s agrees with the app: what `kubectl kustomize` renders for each overlay is
checked against the gateway's own config loader, its status listener and the alerts.

Each check is a function that raises AssertionError, run on the real rendered
manifests; `test_checks_catch_defects` runs each one again on a copy with a seeded
defect, so a check that could never fail fails there. The schema, policy and lint
checks are `.ci/k8s-check.sh`'s; these are the ones only the app can answer.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import math
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from gateway.config import Config, load_file
from gateway.config.schema import ServerConfig, UpstreamURL
from gateway.server import GatewayServer

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
CONTAINER = "gateway"
# The variables the gateway reads (docs/kubernetes.md); a typo in the Deployment would
# otherwise be silently ignored.
GATEWAY_ENV = {
    "LLAMA_GATEWAY_CONFIG",
    "LLAMA_GATEWAY_HOST",
    "LLAMA_GATEWAY_PORT",
    "LLAMA_GATEWAY_STATUS_HOST",
    "LLAMA_GATEWAY_STATUS_PORT",
    "LLAMA_GATEWAY_DRAIN_TIMEOUT",
    "LLAMA_GATEWAY_WORKERS",
    "LLAMA_GATEWAY_LOG_FORMAT",
    "LLAMA_GATEWAY_LOG_LEVEL",
    "LLAMA_GATEWAY_WATCH_CONFIG",
}
# `server.*` keys set from LLAMA_GATEWAY_<KEY>; the file-only load leaves them out.
SERVER_ENV = {f"LLAMA_GATEWAY_{f.name.upper()}" for f in dataclasses.fields(ServerConfig)}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Objects = list[dict[str, Any]]


# --------------------------------------------------------------------------- rendering


@cache
def _rendered(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # CI fails on any skip: a missing kubectl is seen there
        pytest.skip("kubectl is not installed: it renders the kustomize overlays")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}: {done.stderr}"
    return done.stdout


def render(overlay: str) -> Objects:
    """A fresh copy each time: the defect tests mutate what they get."""
    return [d for d in yaml.safe_load_all(_rendered(overlay)) if d]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------- accessors


def one(objs: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(objs: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objs: Objects) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(objs)["containers"] if c["name"] == CONTAINER]
    assert isinstance(c, dict)
    return c


def container_ports(objs: Objects) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(objs).get("ports", [])}


def port_number(objs: Objects, port: int | str) -> int:
    """A probe's, Service's or NetworkPolicy's port: a number, or a container port name."""
    if isinstance(port, int):
        return port
    ports = container_ports(objs)
    assert port in ports, f"port name {port!r} is not a container port ({sorted(ports)})"
    return ports[port]


def config_map(objs: Objects) -> tuple[str, str]:
    """(file name, text) of the config the Deployment mounts, as kustomize rendered it."""
    path = Path(literal_env(objs)["LLAMA_GATEWAY_CONFIG"])
    mounts = [
        m for m in container(objs).get("volumeMounts", []) if m["mountPath"] == str(path.parent)
    ]
    assert len(mounts) == 1, f"no single volume mounted at {path.parent}"
    (volume,) = [v for v in pod_spec(objs)["volumes"] if v["name"] == mounts[0]["name"]]
    cm = one(objs, "ConfigMap", volume["configMap"]["name"])
    assert path.name in cm["data"], f"ConfigMap {cm['metadata']['name']} has no {path.name}"
    return path.name, cm["data"][path.name]


def literal_env(objs: Objects) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objs).get("env", []) if "value" in e}


def kubelet_env(objs: Objects, *, server_keys: bool = True) -> dict[str, str]:
    """The environment the kubelet would give the container: literal values, the
    Secret's values (dev renders its Secret; prod's is the operator's, so a stand-in),
    and resource fields as the kubelet computes them."""
    secrets = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
        for o in objs
        if o["kind"] == "Secret"
    }
    env: dict[str, str] = {}
    for e in container(objs).get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        src = e["valueFrom"]
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            env[e["name"]] = secrets.get(ref["name"], {}).get(ref["key"], f"stand-in-{ref['key']}")
        elif "resourceFieldRef" in src:
            env[e["name"]] = str(resource_field(objs, src["resourceFieldRef"]))
        else:
            raise AssertionError(f"env {e['name']}: unexpected source {sorted(src)}")
    if not server_keys:
        env = {k: v for k, v in env.items() if k not in SERVER_ENV}
    return env


def _cpu(quantity: str | int) -> float:
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def resource_field(objs: Objects, ref: dict[str, Any]) -> int:
    """The kubelet's value of a resourceFieldRef to a CPU field: ceil(quantity / divisor)."""
    assert ref.get("containerName", CONTAINER) == CONTAINER, "resourceFieldRef to another container"
    section, _, name = ref["resource"].partition(".")
    assert name == "cpu", f"unexpected resource field {ref['resource']}"
    quantity = container(objs).get("resources", {}).get(section, {}).get("cpu")
    assert quantity is not None, (
        f"{ref['resource']} is not set: the kubelet would use the node's CPUs"
    )
    return math.ceil(_cpu(quantity) / _cpu(ref.get("divisor", "1")))


def load_config(objs: Objects, *, server_keys: bool = True) -> Config:
    """The mounted config through the gateway's own loader, with the pod's environment
    (`server_keys=False`: without the LLAMA_GATEWAY_<KEY> overrides, the file alone)."""
    name, text = config_map(objs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        return load_file(str(path), kubelet_env(objs, server_keys=server_keys))


def prestop_seconds(objs: Objects) -> int:
    pre = container(objs).get("lifecycle", {}).get("preStop")
    assert pre, "no preStop hook: the drain would start before endpoints are updated"
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = pre["exec"]["command"]
    assert Path(cmd[0]).name == "sleep" and len(cmd) == 2, f"preStop is not a plain sleep: {cmd}"
    return int(cmd[1])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(objs: Objects) -> dict[str, str]:
    labels: dict[str, str] = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


# --------------------------------------------------------------------------- checks


def check_kinds(objs: Objects, overlay: str) -> None:
    kinds = sorted(o["kind"] for o in objs)
    common = ["ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "Service", "Service"]
    extra = {
        "dev": ["Secret"],
        # prod ships no Secret: the operator creates it (no credentials in the repo).
        "prod": ["HorizontalPodAutoscaler", "PodDisruptionBudget", "PrometheusRule"],
    }[overlay]
    if overlay == "prod":
        extra.append("ServiceMonitor")
    assert kinds == sorted([*common, "ServiceAccount", *extra])
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {one(objs, "Namespace")["metadata"]["name"]}


def check_ports(objs: Objects) -> None:
    ports = container_ports(objs)
    env = literal_env(objs)
    # The Deployment's own values, whether or not this gateway version reads them …
    for var, want in (
        ("LLAMA_GATEWAY_PORT", ports.get("http")),
        ("LLAMA_GATEWAY_STATUS_PORT", ports.get("status")),
    ):
        assert int(env.get(var, want or 0)) == want, f"{var}={env.get(var)}, container port {want}"
    for var in ("LLAMA_GATEWAY_HOST", "LLAMA_GATEWAY_STATUS_HOST"):
        assert env.get(var, "0.0.0.0") == "0.0.0.0", f"{var}={env[var]}"
    # … and what the loader makes of the file with and without them.
    for cfg in (load_config(objs), load_config(objs, server_keys=False)):
        # Whichever wins (environment or file), the pod listens where the manifests say.
        s = cfg.server
        assert (ports.get("http"), ports.get("status")) == (s.port, s.status_port)
        # The kubelet's probes and Prometheus come from outside the pod.
        assert (s.host, s.status_host) == ("0.0.0.0", "0.0.0.0")


def check_probes(objs: Objects) -> None:
    c = container(objs)
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    status = load_config(objs).server.status_port
    for probe, path in want.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{probe} on {get['path']}"
        assert port_number(objs, get["port"]) == status, f"{probe} not on the status port"


def check_grace(objs: Objects) -> None:
    grace = pod_spec(objs)["terminationGracePeriodSeconds"]
    drains = {load_config(objs).server.drain_timeout}
    drains.add(load_config(objs, server_keys=False).server.drain_timeout)
    drains.add(float(literal_env(objs).get("LLAMA_GATEWAY_DRAIN_TIMEOUT", 0)))
    need = max(drains) + prestop_seconds(objs)
    assert grace > need, f"terminationGracePeriodSeconds {grace} <= drain + preStop = {need}"


def check_config_mount(objs: Objects) -> None:
    config_map(objs)  # the file is there, under the mounted directory
    mount_dir = str(Path(literal_env(objs)["LLAMA_GATEWAY_CONFIG"]).parent)
    (m,) = [m for m in container(objs)["volumeMounts"] if m["mountPath"] == mount_dir]
    # subPath mounts are copies: ConfigMap updates would never reach the pod.
    assert "subPath" not in m and "subPathExpr" not in m
    assert m.get("readOnly") is True
    assert literal_env(objs).get("LLAMA_GATEWAY_WATCH_CONFIG") == "1"


def check_services(objs: Objects) -> None:
    labels, ports = pod_labels(objs), container_ports(objs)
    served = set()
    for svc in (o for o in objs if o["kind"] == "Service"):
        assert selects(svc["spec"]["selector"], labels), f"{svc['metadata']['name']}: no pods"
        for p in svc["spec"]["ports"]:
            target = p["targetPort"]
            assert isinstance(target, str) and target in ports, f"targetPort {target!r}"
            assert p["port"] == ports[target] and p["name"] == target
            served.add(target)
    assert served == {"http", "status"}
    proxy, metrics = (
        one(objs, "Service", "llama-gateway"),
        one(objs, "Service", "llama-gateway-metrics"),
    )
    assert [p["targetPort"] for p in proxy["spec"]["ports"]] == ["http"]
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["status"]


def check_prometheus_rule(objs: Objects) -> None:
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    rule = one(objs, "PrometheusRule")
    assert rule["spec"] == {"groups": alerts["groups"]}


def check_service_monitor(objs: Objects) -> None:
    sm = one(objs, "ServiceMonitor")
    sel = sm["spec"]["selector"]["matchLabels"]
    chosen = [o for o in objs if o["kind"] == "Service" and selects(sel, o["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in chosen] == ["llama-gateway-metrics"]
    names = {p["name"] for p in chosen[0]["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in names and ep["path"] == "/metrics"


def _ports(rule: dict[str, Any], objs: Objects) -> set[tuple[int, str]]:
    return {(port_number(objs, p["port"]), p.get("protocol", "TCP")) for p in rule.get("ports", [])}


def _ns_selected(rule: dict[str, Any], namespace: str) -> bool:
    return any(
        f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == namespace
        for f in rule.get("from", rule.get("to", []))
    )


def check_network_policy(objs: Objects) -> None:
    np = one(objs, "NetworkPolicy")["spec"]
    assert selects(np["podSelector"]["matchLabels"], pod_labels(objs))
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    s = load_config(objs).server
    ingress = np["ingress"]
    # The proxy port from anywhere; the status port from the monitoring namespace only.
    assert any("from" not in r and (s.port, "TCP") in _ports(r, objs) for r in ingress)
    status_rules = [r for r in ingress if (s.status_port, "TCP") in _ports(r, objs)]
    assert status_rules and all(_ns_selected(r, "monitoring") for r in status_rules)
    egress = np["egress"]
    assert any("to" not in r and {(53, "UDP"), (53, "TCP")} <= _ports(r, objs) for r in egress)
    for route in load_config(objs).routes:
        for t in route.targets:
            assert any(_egress_allows(r, t.options.upstream_url, objs) for r in egress), (
                f"no egress rule admits target {t.name} at {t.options.upstream_url.hostport}"
            )
        rl = route.rate_limiting
        if rl is not None and rl.redis is not None and rl.strategy == "redis":
            u = urlsplit(rl.redis.url)  # rate limits shared through Redis: reach it too
            if u.scheme != "unix" and u.hostname:
                redis = UpstreamURL(u.scheme, u.hostname, u.port or 6379, "")
                assert any(_egress_allows(r, redis, objs) for r in egress), (
                    f"no egress rule admits the Redis of route {route.name} at {redis.hostport}"
                )


def _egress_allows(rule: dict[str, Any], url: UpstreamURL, objs: Objects) -> bool:
    if (url.port, "TCP") not in _ports(rule, objs):
        return False
    peers = rule.get("to")
    if not peers:
        return True
    try:
        ip = ipaddress.ip_address(url.host)
    except ValueError:
        # A Service name <svc>.<namespace>.svc…: its pods are in that namespace.
        parts = url.host.split(".")
        return len(parts) >= 3 and parts[2] == "svc" and _ns_selected(rule, parts[1])
    return any(
        ip in ipaddress.ip_network(p["ipBlock"]["cidr"])
        and not any(ip in ipaddress.ip_network(x) for x in p["ipBlock"].get("except", []))
        for p in peers
        if "ipBlock" in p
    )


def check_secret_refs(objs: Objects) -> None:
    _, text = config_map(objs)
    env = {e["name"]: e for e in container(objs)["env"]}
    for var in sorted(set(_PLACEHOLDER.findall(text))):
        assert var in env, f"config uses ${{{var}}}, the Deployment does not set it"
        assert "secretKeyRef" in env[var].get("valueFrom", {}), f"{var} is not from a Secret"
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and secrets:  # dev renders its Secret: every reference must resolve
            assert ref["key"] in secrets[ref["name"]]["data"], f"{ref} does not resolve"


def check_security(objs: Objects) -> None:
    spec, c = pod_spec(objs), container(objs)
    user = re.search(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user, "the Dockerfile has no numeric USER"
    uid = int(user.group(1))
    for ctx in (spec["securityContext"], c["securityContext"]):
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == uid
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    # Service links would put LLAMA_GATEWAY_PORT=tcp://… in the environment.
    assert spec["enableServiceLinks"] is False
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    (vol,) = [v for v in spec["volumes"] if tmp and v["name"] == tmp[0]["name"]]
    assert "emptyDir" in vol
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])


def check_env(objs: Objects) -> None:
    names = [e["name"] for e in container(objs)["env"]]
    assert len(names) == len(set(names)), "an env var is set twice"
    unknown = {n for n in names if n.startswith("LLAMA_GATEWAY_")} - GATEWAY_ENV
    assert not unknown, f"variables the gateway does not read: {sorted(unknown)}"
    env = literal_env(objs)
    assert env.get("LLAMA_GATEWAY_LOG_FORMAT") == "json"
    (workers,) = [e for e in container(objs)["env"] if e["name"] == "LLAMA_GATEWAY_WORKERS"]
    ref = workers["valueFrom"]["resourceFieldRef"]
    # One worker per CPU of the limit: the pod never runs more processes than it may use.
    assert ref["resource"] == "limits.cpu"
    n = resource_field(objs, ref)
    assert n == math.ceil(_cpu(container(objs)["resources"]["limits"]["cpu"])) and n >= 1
    server = load_config(objs).server
    if hasattr(server, "workers"):  # the config knows server.workers: it takes the env's
        assert server.workers == n


def check_scaling(objs: Objects, overlay: str) -> None:
    dep = one(objs, "Deployment")
    if overlay == "dev":
        assert dep["spec"]["replicas"] == 1
        return
    # With an HPA, a replicas field would make each `kubectl apply` undo its scaling.
    assert "replicas" not in dep["spec"]
    hpa = one(objs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"], pod_labels(objs))
    # At least one pod stays up through voluntary disruptions at the HPA's minimum.
    assert pdb.get("maxUnavailable", 0) >= 1 and pdb["maxUnavailable"] < hpa["minReplicas"]


# --------------------------------------------------------------------------- tests

ALL_OVERLAYS: list[Callable[[Objects], None]] = [
    check_ports,
    check_probes,
    check_grace,
    check_config_mount,
    check_services,
    check_network_policy,
    check_secret_refs,
    check_security,
    check_env,
]


def test_overlay_kinds(overlay: str) -> None:
    check_kinds(render(overlay), overlay)


@pytest.mark.parametrize("check", ALL_OVERLAYS, ids=lambda f: f.__name__)
def test_manifests(overlay: str, check: Callable[[Objects], None]) -> None:
    check(render(overlay))


def test_scaling(overlay: str) -> None:
    check_scaling(render(overlay), overlay)


def test_prometheus_rule_is_alerts_yaml() -> None:
    check_prometheus_rule(render("prod"))


def test_service_monitor_scrapes_the_status_port() -> None:
    check_service_monitor(render("prod"))


def test_config_map_config_passes_the_loader(overlay: str, tmp_path: Path) -> None:
    # As the pod reads it: the rendered ConfigMap's file, the Deployment's environment.
    name, text = config_map(render(overlay))
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    cfg = load_file(str(path), kubelet_env(render(overlay)))
    assert cfg.routes and all(r.targets for r in cfg.routes)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: the upstreams of the shipped configs are
    cluster addresses, and no test may send traffic anywhere but 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


def _on_loopback(cfg: Config, port: int) -> Config:
    def target(t: Any) -> Any:
        u = t.options.upstream_url
        url = UpstreamURL(u.scheme, "127.0.0.1", port, u.path)
        options = dataclasses.replace(t.options, upstream_url=url)
        return dataclasses.replace(t, model=dataclasses.replace(t.model, options=options))

    routes = tuple(
        dataclasses.replace(r, targets=tuple(map(target, r.targets))) for r in cfg.routes
    )
    # One process, on loopback: the worker supervisor is the CLI's, not under test here.
    extra = {"workers": 1} if hasattr(cfg.server, "workers") else {}
    server = dataclasses.replace(
        cfg.server, host="127.0.0.1", port=0, status_host="127.0.0.1", status_port=0, **extra
    )
    return dataclasses.replace(cfg, server=server, routes=routes)


async def test_probe_and_scrape_paths_are_served(overlay: str, closed_port: int) -> None:
    objs = render(overlay)
    cfg = _on_loopback(load_config(objs), closed_port)
    assert {t.options.upstream_url.host for r in cfg.routes for t in r.targets} == {"127.0.0.1"}
    c = container(objs)
    paths = {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    if overlay == "prod":
        paths |= {ep["path"] for ep in one(objs, "ServiceMonitor")["spec"]["endpoints"]}
    assert paths >= {"/healthz", "/readyz"}
    server = GatewayServer(cfg)
    await server.start("127.0.0.1", 0, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            for path in sorted(paths):
                async with http.get(f"http://127.0.0.1:{server.status_port}{path}") as resp:
                    assert resp.status == 200, f"{path}: {resp.status}"
    finally:
        await server.stop()


# --------------------------------------------------------------------------- defects


def _env(objs: Objects, name: str, value: str) -> None:
    for e in container(objs)["env"]:
        if e["name"] == name:
            e["value"] = value


def _set_config(objs: Objects, edit: Callable[[str], str]) -> None:
    name, text = config_map(objs)
    for o in objs:
        if o["kind"] == "ConfigMap" and o["data"].get(name) == text:
            o["data"][name] = edit(text)


DEFECTS: list[tuple[str, str, Callable[[Objects], None], Callable[[Objects], None]]] = [
    (
        "container port",
        "prod",
        lambda o: container(o)["ports"][0].update(containerPort=8080),
        check_ports,
    ),
    ("env port", "prod", lambda o: _env(o, "LLAMA_GATEWAY_PORT", "9000"), check_ports),
    (
        "file port",
        "dev",
        lambda o: _set_config(o, lambda t: t.replace("port: 8000", "port: 9000")),
        check_ports,
    ),
    (
        "loopback bind",
        "prod",
        lambda o: _env(o, "LLAMA_GATEWAY_STATUS_HOST", "127.0.0.1"),
        check_ports,
    ),
    (
        "probe path",
        "prod",
        lambda o: container(o)["readinessProbe"]["httpGet"].update(path="/ready"),
        check_probes,
    ),
    (
        "probe port",
        "dev",
        lambda o: container(o)["livenessProbe"]["httpGet"].update(port="http"),
        check_probes,
    ),
    ("grace", "prod", lambda o: pod_spec(o).update(terminationGracePeriodSeconds=35), check_grace),
    ("env drain", "prod", lambda o: _env(o, "LLAMA_GATEWAY_DRAIN_TIMEOUT", "40"), check_grace),
    (
        "file drain",
        "dev",
        lambda o: _set_config(o, lambda t: t.replace("drain_timeout: 30", "drain_timeout: 60")),
        check_grace,
    ),
    ("no preStop", "prod", lambda o: container(o).pop("lifecycle"), check_grace),
    (
        "subPath",
        "prod",
        lambda o: container(o)["volumeMounts"][0].update(subPath="config.yaml"),
        check_config_mount,
    ),
    ("no reload", "dev", lambda o: _env(o, "LLAMA_GATEWAY_WATCH_CONFIG", "0"), check_config_mount),
    (
        "service port",
        "prod",
        lambda o: one(o, "Service", "llama-gateway")["spec"]["ports"][0].update(targetPort=8000),
        check_services,
    ),
    (
        "service selector",
        "dev",
        lambda o: one(o, "Service", "llama-gateway-metrics")["spec"]["selector"].update(app="x"),
        check_services,
    ),
    (
        "alert dropped",
        "prod",
        lambda o: one(o, "PrometheusRule")["spec"]["groups"][1]["rules"].pop(),
        check_prometheus_rule,
    ),
    (
        "monitor port",
        "prod",
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="http"),
        check_service_monitor,
    ),
    (
        "proxy ingress",
        "prod",
        lambda o: one(o, "NetworkPolicy")["spec"]["ingress"].pop(0),
        check_network_policy,
    ),
    (
        "status ingress open",
        "prod",
        lambda o: one(o, "NetworkPolicy")["spec"]["ingress"][1].pop("from"),
        check_network_policy,
    ),
    (
        "dns egress",
        "dev",
        lambda o: one(o, "NetworkPolicy")["spec"]["egress"][0]["ports"].pop(),
        check_network_policy,
    ),
    (
        "upstream cidr",
        "prod",
        lambda o: one(o, "NetworkPolicy")["spec"]["egress"][1]["to"][0]["ipBlock"].update(
            cidr="10.0.1.0/24"
        ),
        check_network_policy,
    ),
    (
        "upstream port",
        "dev",
        lambda o: _set_config(o, lambda t: t.replace(":11434/api/chat", ":11435/api/chat")),
        check_network_policy,
    ),
    (
        "redis unreachable",
        "prod",
        lambda o: _set_config(
            o,
            lambda t: t.replace(
                "    plugin: ai-proxy-advanced\n",
                "    plugin: ai-proxy-advanced\n    rate_limiting: {limits: [{requests: 9, window: 60}],"
                " strategy: redis, redis: {url: 'redis://redis.cache.svc:6379/0'}}\n",
                1,
            ),
        ),
        check_network_policy,
    ),
    (
        "secret ref",
        "prod",
        lambda o: _set_config(o, lambda t: t.replace("${LLAMACPP_API_KEY}", "${OTHER_KEY}")),
        check_secret_refs,
    ),
    (
        "secret key",
        "dev",
        lambda o: container(o)["env"][-1]["valueFrom"]["secretKeyRef"].update(key="NOPE"),
        check_secret_refs,
    ),
    (
        "writable root",
        "prod",
        lambda o: container(o)["securityContext"].update(readOnlyRootFilesystem=False),
        check_security,
    ),
    (
        "root uid",
        "dev",
        lambda o: pod_spec(o)["securityContext"].update(runAsUser=0),
        check_security,
    ),
    (
        "service links",
        "prod",
        lambda o: pod_spec(o).update(enableServiceLinks=True),
        check_security,
    ),
    (
        "env typo",
        "prod",
        lambda o: container(o)["env"].append({"name": "LLAMA_GATEWAY_WORKER", "value": "2"}),
        check_env,
    ),
    (
        "workers from requests",
        "dev",
        lambda o: container(o)["env"][
            [e["name"] for e in container(o)["env"]].index("LLAMA_GATEWAY_WORKERS")
        ]["valueFrom"]["resourceFieldRef"].update(resource="requests.cpu"),
        check_env,
    ),
    (
        "prod replicas",
        "prod",
        lambda o: one(o, "Deployment")["spec"].update(replicas=2),
        lambda o: check_scaling(o, "prod"),
    ),
    (
        "pdb blocks",
        "prod",
        lambda o: one(o, "PodDisruptionBudget")["spec"].update(maxUnavailable=0),
        lambda o: check_scaling(o, "prod"),
    ),
    (
        "stray secret",
        "prod",
        lambda o: o.append(copy.deepcopy(one(render("dev"), "Secret"))),
        lambda o: check_kinds(o, "prod"),
    ),
]


@pytest.mark.parametrize(("what", "where", "defect", "check"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_checks_catch_defects(
    what: str,
    where: str,
    defect: Callable[[Objects], None],
    check: Callable[[Objects], None],
) -> None:
    objs = render(where)
    check(objs)  # passes on the shipped manifests …
    defect(objs)
    with pytest.raises(AssertionError):  # … and fails once they are wrong
        check(objs)
