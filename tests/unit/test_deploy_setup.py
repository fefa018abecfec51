"""``switchyard deploy setup`` offline: each service's bundle holds exactly what it needs, the
rendered configs point at the paths the containers see, and a second run changes nothing."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.admin.token import AdminAuth, Role
from switchyard.config import load_settings
from switchyard.stack import containers

EXPECTED = {
    "nats": {"ca.pem", "server.pem", "server-key.pem", "route.pem", "route-key.pem",
             "nats-1.conf", "nats-2.conf", "nats-3.conf"},
    "openbao": {"ca.pem", "server.pem", "server-key.pem", "openbao.hcl", "unseal.key"},
    "valkey": {"ca.pem", "valkey.conf", "users.acl"},
    "tail": {"ca.pem", "tail.pem", "tail-key.pem", "ingress.password"},
    "gateway": {"ca.pem", "gateway.pem", "gateway-key.pem", "admin.pem", "admin-key.pem",
                "ingress.password", "admin.password", "admin-token", "admin-readonly-token"},
    "head": {"ca.pem", "head.pem", "head-key.pem"},
    "modelproxy": {"ca.pem", "modelproxy.pem", "modelproxy-key.pem"},
    "secrets": {"ca.pem", "secrets.pem", "secrets-key.pem"},
    "control": {"ca.pem", "control.pem", "control-key.pem"},
    "accounting": {"ca.pem", "accounting.pem", "accounting-key.pem", "accounting.password"},
    "batch": {"ca.pem", "batch.pem", "batch-key.pem", "batch.password"},
    "init": {"ca.pem", "provisioner.pem", "provisioner-key.pem", "admin.pem", "admin-key.pem"},
}  # fmt: skip

pytestmark = pytest.mark.unit


def _layout(tmp_path: Path) -> containers.DeployLayout:
    return containers.DeployLayout(state=tmp_path / "state", bundles=tmp_path / "bundles")


def _contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_each_bundle_holds_only_what_its_service_needs(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    containers.setup(load_settings(None, env={}), layout)
    found = {b.name: {f.name for f in b.iterdir()} for b in layout.bundles.iterdir()}
    assert found == EXPECTED
    for path in layout.bundles.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The CA key and OpenBao's root credentials never leave the private state.
    assert not list(layout.bundles.rglob("ca-key.pem"))


def test_the_gateway_gets_a_read_only_token_too(tmp_path: Path) -> None:
    """As `switchyard up` does: a second token that may look and change nothing, made once,
    kept in the private state, copied to the gateway's bundle only."""
    layout = _layout(tmp_path)
    done = containers.setup(load_settings(None, env={}), layout)
    assert "read-only admin token created" in done
    gateway = layout.bundle("gateway")
    read_only = (gateway / "admin-readonly-token").read_text()
    assert read_only == (layout.state / "admin-readonly-token").read_text()
    assert read_only.startswith("sy-read-")
    assert read_only != (gateway / "admin-token").read_text()
    auth = AdminAuth(gateway / "admin-token", read_only=gateway / "admin-readonly-token")
    assert auth.check(read_only.strip()) is Role.READ_ONLY
    assert auth.check((gateway / "admin-token").read_text().strip()) is Role.ADMIN
    assert "read-only admin token created" not in containers.setup(
        load_settings(None, env={}), layout
    )


def test_configs_point_at_container_paths_and_name_every_node(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    containers.setup(load_settings(None, env={}), layout)
    for path in layout.bundles.rglob("*"):
        if path.suffix in (".conf", ".hcl"):
            assert str(tmp_path) not in path.read_text(), f"{path} names the setup's own paths"
    node = (layout.bundle("nats") / "nats-2.conf").read_text()
    assert 'server_name: "nats-2"' in node
    assert 'routes: ["tls://nats-1:6222", "tls://nats-2:6222", "tls://nats-3:6222"]' in node
    assert 'cert_file: "/run/switchyard/creds/route.pem"' in node
    assert 'store_dir: "/var/lib/nats/jetstream"' in node
    assert 'http: "127.0.0.1:8222"' in node  # monitoring stays inside the container
    hcl = (layout.bundle("openbao") / "openbao.hcl").read_text()
    assert 'path    = "/var/lib/openbao"' in hcl
    assert "file:///run/switchyard/creds/unseal.key" in hcl
    valkey = (layout.bundle("valkey") / "valkey.conf").read_text()
    assert "dir /var/lib/valkey\n" in valkey
    assert "aclfile /run/switchyard/creds/users.acl" in valkey
    # The ACL holds password hashes only; the passwords stay in the state and the bundles.
    password = (layout.bundle("tail") / "ingress.password").read_text().strip()
    assert password not in (layout.bundle("valkey") / "users.acl").read_text()


def test_a_second_run_keeps_everything(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    settings = load_settings(None, env={})
    containers.setup(settings, layout)
    before = _contents(tmp_path)
    containers.setup(settings, layout)
    assert _contents(tmp_path) == before


def test_kubernetes_host_names(tmp_path: Path) -> None:
    hosts = tuple(f"nats-{n}.nats.switchyard.svc.cluster.local" for n in range(3))
    layout = dataclasses.replace(_layout(tmp_path), nats_hosts=hosts)
    containers.setup(load_settings(None, env={}), layout)
    names = {p.name for p in layout.bundle("nats").glob("*.conf")}
    assert names == {"nats-0.conf", "nats-1.conf", "nats-2.conf"}
    node = (layout.bundle("nats") / "nats-0.conf").read_text()
    assert f"tls://{hosts[2]}:6222" in node
    # Clients (and KEDA) use the names above, never the pods' changing IP addresses.
    assert "no_advertise: true" in node


def test_cli_kubernetes_target(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "switchyard", "--home", str(tmp_path / "state"), "deploy",
         "setup", "--bundles", str(tmp_path / "bundles"), "--target", "kubernetes"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    node = (tmp_path / "bundles" / "nats" / "nats-1.conf").read_text()
    assert 'server_name: "nats-1"' in node
    assert (
        'routes: ["tls://nats-0.nats:6222", "tls://nats-1.nats:6222", "tls://nats-2.nats:6222"]'
        in node
    )
    assert 'http: "0.0.0.0:8222"' in node


def test_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "switchyard", "--home", str(tmp_path / "state"), "deploy",
         "setup", "--bundles", str(tmp_path / "bundles")],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "bundles: nats, openbao, valkey, tail" in out.stdout
