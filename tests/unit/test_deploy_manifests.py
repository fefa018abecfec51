"""The Kubernetes manifests under deploy/, checked offline: structure, selectors, the settings
they give, and the zones their NetworkPolicies enforce (evaluated for every pair of workloads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.bus import subjects
from switchyard.config import load_settings
from switchyard.serve import COMPONENTS
from switchyard.stack import containers

ROOT = Path(__file__).parents[2] / "deploy" / "kubernetes"
WORKLOADS = ("Deployment", "StatefulSet", "Job")

pytestmark = pytest.mark.unit


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((ROOT / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in ROOT.glob("*.yaml")} - {"kustomization.yaml"}
    return [d for name in sorted(listed) for d in _docs(ROOT / name)]


def _of(manifests: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in manifests if d["kind"] in kinds]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_every_document_is_well_formed(manifests: list[dict[str, Any]]) -> None:
    names = set()
    for doc in manifests:
        assert doc["apiVersion"]
        assert doc["kind"]
        assert doc["metadata"]["name"]
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in names, key
        names.add(key)
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "switchyard"


def test_workloads_select_their_pods_and_run_known_commands(
    manifests: list[dict[str, Any]],
) -> None:
    served = set()
    for workload in _of(manifests, *WORKLOADS):
        labels = _labels(workload)
        if workload["kind"] != "Job":
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["switchyard.dev/zone"] in ("client", "core", "bridge")
        security = _pod(workload)["securityContext"]
        assert security["runAsNonRoot"]
        assert security["runAsUser"] == 10001
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}  # Pod Security "restricted"
        for container in _pod(workload)["containers"]:
            assert container["image"] == "switchyard"
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
            assert container["resources"]["requests"], workload["metadata"]["name"]
            command = container["command"]
            if command[:2] == ["switchyard", "serve"]:
                assert command[2] in COMPONENTS
                served.add(command[2])
                assert container["envFrom"] == [{"configMapRef": {"name": "switchyard-env"}}]
    assert served == set(COMPONENTS)


def test_each_pod_mounts_only_its_own_bundle(manifests: list[dict[str, Any]]) -> None:
    for workload in _of(manifests, *WORKLOADS):
        secrets = [v["secret"]["secretName"] for v in _pod(workload)["volumes"] if "secret" in v]
        name = workload["metadata"]["name"].removeprefix("switchyard-")
        assert secrets == [f"switchyard-{name}"], workload["metadata"]["name"]
        assert name in containers.BUNDLES


def test_services_and_statefulsets_match(manifests: list[dict[str, Any]]) -> None:
    pods = {w["metadata"]["name"]: w for w in _of(manifests, *WORKLOADS)}
    for service in _of(manifests, "Service"):
        selected = [
            w for w in pods.values() if service["spec"]["selector"].items() <= _labels(w).items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = {
            p.get("name"): p["containerPort"]
            for c in _pod(selected[0])["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (service["metadata"], port)
    for sts in _of(manifests, "StatefulSet"):
        assert ("Service", sts["spec"]["serviceName"]) in {
            (d["kind"], d["metadata"]["name"]) for d in manifests
        }


def test_the_settings_load_and_name_every_nats_node(manifests: list[dict[str, Any]]) -> None:
    env = next(d for d in _of(manifests, "ConfigMap") if d["metadata"]["name"] == "switchyard-env")
    settings = load_settings(None, env=env["data"])
    hosts = containers.KUBERNETES_NATS_HOSTS
    assert settings.nats_servers == tuple(f"tls://{h}:4222" for h in hosts)
    assert settings.stream_replicas == 3
    assert settings.health.host == "0.0.0.0"  # noqa: S104
    nats = next(s for s in _of(manifests, "StatefulSet") if s["metadata"]["name"] == "nats")
    pods = [f"nats-{n}" for n in range(nats["spec"]["replicas"])]
    assert [containers.node_name(h) for h in hosts] == pods
    assert _pod(nats)["containers"][0]["command"][-1] == "/run/switchyard/creds/$(POD_NAME).conf"


def test_the_keda_scaler_reads_a_dispatch_consumer(manifests: list[dict[str, Any]]) -> None:
    scaled = _docs(ROOT / "keda" / "scaledobject.yaml")[0]
    assert scaled["kind"] == "ScaledObject"
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert ("Deployment", target) in {(d["kind"], d["metadata"]["name"]) for d in manifests}
    assert target == "modelproxy"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta["account"] == "CORE"
    assert meta["stream"] == subjects.DISPATCH_STREAM
    demo = next(iter(load_settings(None, env={}).route_table.deployments()))
    assert meta["consumer"] == subjects.dispatch_consumer(demo)
    host, _, port = meta["natsServerMonitoringEndpoint"].rpartition(":")
    assert host == "nats.switchyard.svc.cluster.local"
    assert port == "8222"


def test_keda_can_address_every_nats_node_by_name(manifests: list[dict[str, Any]]) -> None:
    """The nodes do not advertise their addresses (no_advertise), so KEDA's scaler (2.11+)
    takes each node's name from /varz (``server_name``, the cluster routes: the first label
    of each) and asks ``<node>.<endpoint host>``, keeping the node whose name is the
    consumer's leader. Those must be the pods' own DNS names, under the headless Service."""
    scaled = _docs(ROOT / "keda" / "scaledobject.yaml")[0]
    endpoint = scaled["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"]
    host, _, port = endpoint.rpartition(":")
    service_name, namespace = host.split(".")[:2]
    (service,) = [s for s in _of(manifests, "Service") if s["metadata"]["name"] == service_name]
    assert service["spec"]["clusterIP"] == "None"  # headless: <pod>.<service> resolves
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    nats = next(s for s in _of(manifests, "StatefulSet") if s["metadata"]["name"] == "nats")
    assert nats["spec"]["serviceName"] == service_name
    pods = [f"nats-{n}" for n in range(nats["spec"]["replicas"])]
    for route_host, pod in zip(containers.KUBERNETES_NATS_HOSTS, pods, strict=True):
        node = route_host.split(".")[0]
        assert node == containers.node_name(route_host) == pod  # the leader's server_name
        assert f"{node}.{host}" == f"{pod}.{service_name}.{namespace}.svc.cluster.local"


# ---- the NetworkPolicies, evaluated ----


@dataclass(frozen=True)
class Peer:
    """A traffic source or destination: a pod of ours, or something outside the namespace."""

    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    namespace: dict[str, str] | None = field(default=None, hash=False)  # None: ours
    ports: tuple[int, ...] = ()


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if selector.keys() - {"matchLabels", "matchExpressions"}:
        raise AssertionError(f"unsupported selector {selector}")
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    pods, spaces = rule_peer.get("podSelector"), rule_peer.get("namespaceSelector")
    if "ipBlock" in rule_peer:
        return peer.namespace is not None and peer.name == "outside"
    if spaces is None:
        return peer.namespace is None and _matches(pods or {}, peer.labels)
    if peer.namespace is None or not _matches(spaces, peer.namespace):
        return False
    return pods is None or _matches(pods, peer.labels)


def _allowed(
    policies: list[dict[str, Any]], direction: str, subject: Peer, other: Peer, port: int
) -> bool:
    """Whether ``subject``'s policies of ``direction`` let traffic with ``other`` on ``port``."""
    if subject.namespace is not None:
        return True  # not ours: no policy of ours applies
    kind = "Ingress" if direction == "ingress" else "Egress"
    selecting = [
        p for p in policies
        if kind in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], subject.labels)
    ]  # fmt: skip
    if not selecting:
        return True
    key = "from" if direction == "ingress" else "to"
    for policy in selecting:
        for rule in policy["spec"].get(direction, []):
            peers_ok = key not in rule or any(_peer_matches(p, other) for p in rule[key])
            ports_ok = "ports" not in rule or any(p["port"] == port for p in rule["ports"])
            if peers_ok and ports_ok:
                return True
    return False


def _peers(manifests: list[dict[str, Any]]) -> dict[str, Peer]:
    found = {}
    for workload in _of(manifests, *WORKLOADS):
        ports = tuple(
            p["containerPort"] for c in _pod(workload)["containers"] for p in c.get("ports", [])
        )
        found[workload["metadata"]["name"]] = Peer(
            workload["metadata"]["name"], _labels(workload), None, ports
        )
    for space in ("keda", "monitoring", "elsewhere"):
        found[space] = Peer(space, {}, {"kubernetes.io/metadata.name": space})
    found["outside"] = Peer("outside", {}, {})
    return found


def reachable(manifests: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """Every (source, destination, port) the policies allow."""
    policies = _of(manifests, "NetworkPolicy")
    peers = _peers(manifests)
    allowed = set()
    for src in peers.values():
        for dst in peers.values():
            for port in dst.ports:
                if src is dst:
                    continue
                if _allowed(policies, "egress", src, dst, port) and _allowed(
                    policies, "ingress", dst, src, port
                ):
                    allowed.add((src.name, dst.name, port))
    return allowed


def test_network_policies_mirror_the_zones(manifests: list[dict[str, Any]]) -> None:
    peers = _peers(manifests)
    allowed = reachable(manifests)
    zone = {name: p.labels.get("switchyard.dev/zone") for name, p in peers.items()}
    client = [n for n, z in zone.items() if z == "client"]
    core = [n for n, z in zone.items() if z == "core"]
    assert set(client) == {"tail", "gateway", "batch"}
    assert {"head", "modelproxy", "secrets", "control", "accounting", "openbao"} <= set(core)
    # Nothing in the client zone reaches anything in the core zone, on any port.
    assert {(s, d, p) for s, d, p in allowed if s in client and d in core} == set()
    # Both zones reach the bridge on its service ports, and nothing else of it.
    for src in client + core:
        if src == "openbao":
            continue
        assert (src, "nats", 4222) in allowed, src
        assert (src, "valkey", 6379) in allowed, src
        assert (src, "nats", 6222) not in allowed
        assert (src, "nats", 8222) not in allowed
    # OpenBao answers only the secrets service and the init Job.
    assert {s for s, d, p in allowed if d == "openbao"} == {"secrets", "switchyard-init"}
    # NATS monitoring (unauthenticated) answers only KEDA and Prometheus's namespace.
    assert {s for s, d, p in allowed if d == "nats" and p == 8222} == {"keda", "monitoring"}
    # Prometheus reaches every Switchyard process's /metrics, the client zone's runner too.
    for name in ("head", "modelproxy", "secrets", "control", "accounting", "batch"):
        assert ("monitoring", name, 9090) in allowed, name
    assert {s for s, d, p in allowed if d == "batch"} == {"monitoring"}
    # The edges are reachable from outside; no core service is.
    assert ("outside", "tail", 8080) in allowed
    assert ("outside", "gateway", 8081) in allowed
    assert not any(s in ("outside", "elsewhere") and d in core for s, d, p in allowed)


def test_the_evaluator_sees_a_hole(manifests: list[dict[str, Any]]) -> None:
    """A policy opening a core worker to everyone, and dropping the client zone's egress rule,
    lets the edges reach it: the zone check above would fail."""
    hole = {
        "kind": "NetworkPolicy",
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "head"}},
            "policyTypes": ["Ingress"],
            "ingress": [{}],
        },
    }
    opened = [d for d in manifests if d["metadata"]["name"] != "client-zone-egress"] + [
        hole | {"metadata": {"name": "hole"}}
    ]
    assert ("tail", "head", 9090) in reachable(opened)
    assert ("tail", "head", 9090) not in reachable(manifests)


def _workload(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(w for w in _of(manifests, *WORKLOADS) if w["metadata"]["name"] == name)


def test_the_init_job_reaches_openbao_before_it_is_ready(manifests: list[dict[str, Any]]) -> None:
    """OpenBao's readiness (/v1/sys/health) fails until the init Job initialises it, and the
    Job reaches it through its Service: the Service must list the pod while it is not ready."""
    (service,) = [s for s in _of(manifests, "Service") if s["metadata"]["name"] == "openbao"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    probe = _pod(_workload(manifests, "openbao"))["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v1/sys/health"
    env = next(d for d in _of(manifests, "ConfigMap") if d["metadata"]["name"] == "switchyard-env")
    assert env["data"]["SWITCHYARD_OPENBAO__ADDR"] == "https://openbao:8200"


def test_streams_in_progress_outlive_a_pod_stop(manifests: list[dict[str, Any]]) -> None:
    """A model-proxy or an edge stopped by a rollout or KEDA gives the answers it streams half
    of stack.stop_timeout_s and exits at stop_timeout_s + 1; Kubernetes must not kill it
    sooner, and a minute is what an LLM answer may need."""
    for name in ("modelproxy", "tail", "gateway"):
        pod = _pod(_workload(manifests, name))
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        stop_timeout = float(env["SWITCHYARD_STACK__STOP_TIMEOUT_S"])
        assert stop_timeout / 2 >= 60, name
        assert pod["terminationGracePeriodSeconds"] > stop_timeout + 1, name
    for workload in _of(manifests, "Deployment"):
        pod = _pod(workload)
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        stop_timeout = float(env.get("SWITCHYARD_STACK__STOP_TIMEOUT_S", 10))
        assert pod["terminationGracePeriodSeconds"] > stop_timeout + 1, workload["metadata"]
        # A worker's health server answers once it has connected: a slow first start must
        # not be killed by the liveness probe.
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
        assert "initialDelaySeconds" not in container["livenessProbe"]


def test_replicas_spread_over_nodes(manifests: list[dict[str, Any]]) -> None:
    nats = _pod(_workload(manifests, "nats"))
    (term,) = nats["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "nats"
    }
    for workload in _of(manifests, "Deployment"):
        if workload["spec"].get("replicas", 1) < 2:
            continue
        name = workload["metadata"]["name"]
        (spread,) = _pod(workload)["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname", name
        assert spread["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_the_gateway_keeps_a_browser_on_one_replica(manifests: list[dict[str, Any]]) -> None:
    """The admin console's one-time messages and previewed imports live in one gateway's
    memory (its sessions are shared through NATS KV)."""
    (service,) = [s for s in _of(manifests, "Service") if s["metadata"]["name"] == "gateway"]
    assert _workload(manifests, "gateway")["spec"]["replicas"] > 1
    assert service["spec"]["sessionAffinity"] == "ClientIP"


def test_the_gateway_reads_both_admin_tokens_from_its_bundle(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The read-only admin token (made by `deploy setup`, in the gateway's Secret) is where the
    settings say: a gateway without it would give no read-only access. Its setting is the
    gateway container's own, not the shared ConfigMap's: every pod loads that, and a pod of
    0.2.0 (before the setting) refused to start on it during a rolling upgrade."""
    env = next(d for d in _of(manifests, "ConfigMap") if d["metadata"]["name"] == "switchyard-env")
    assert "SWITCHYARD_ADMIN__READONLY_TOKEN_FILE" not in env["data"]
    container = _pod(_workload(manifests, "gateway"))["containers"][0]
    own = {e["name"]: e["value"] for e in container.get("env", [])}
    settings = load_settings(None, env={**env["data"], **own})
    (mount,) = container["volumeMounts"]
    layout = containers.DeployLayout(state=tmp_path / "state", bundles=tmp_path / "bundles")
    containers.setup(load_settings(None, env={}), layout)
    bundle = {p.name for p in layout.bundle("gateway").iterdir()}
    for path in (settings.admin_token_file, settings.admin_readonly_token_file):
        assert path.parent == Path(mount["mountPath"]), path
        assert path.name in bundle, path


def test_the_keda_overlay_leaves_the_replica_count_to_the_autoscaler() -> None:
    overlay_dir = ROOT.parent / "kubernetes-keda"
    overlay = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted((overlay_dir / r).resolve() for r in overlay["resources"]) == sorted(
        [ROOT.resolve(), (ROOT / "keda").resolve()]
    )
    keda = yaml.safe_load((ROOT / "keda" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert keda["resources"] == ["scaledobject.yaml"]
    assert keda["namespace"] == "switchyard"
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "modelproxy"}
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]
