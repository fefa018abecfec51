"""First start of a container deployment: ``switchyard deploy setup`` and ``deploy init``.

The same certificates, server configs and provisioning as ``switchyard up``, laid out for
containers, where each service sees only its own credentials:

* ``setup`` (one-shot, before any server, no network) creates the CA and every certificate,
  the admin token and the read-only one, the Valkey role passwords and OpenBao's unseal key in
  the deployment's private state, renders the configs of the NATS nodes, OpenBao and Valkey,
  and copies to each service's *bundle* (its own volume, or Secret) the files that service
  needs and nothing else:
  the tail gets its certificate and the ``ingress`` Valkey password, never the CA key, another
  identity's key or OpenBao's credentials; Valkey gets its config and the ACL (hashes only).
  Servers keep only their data in their data volumes.
* ``init`` (one-shot, once the servers run) initialises OpenBao (root token kept in the
  private state, AppRole credentials into the secrets service's bundle) and provisions streams,
  consumers and KV buckets, retrying while the NATS cluster elects its leaders.

Both are idempotent: every file that exists is kept, so a restart or a second run changes
nothing and every secret, key, route, queued request and counter survives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from switchyard.bus import identities
from switchyard.bus.identities import SERVER_CERT
from switchyard.bus.tls import tls_files
from switchyard.config import Settings
from switchyard.errors import StackError
from switchyard.stack import natsnodes, openbao, valkey
from switchyard.stack.certs import ROUTE_CERT, init_certificates
from switchyard.stack.demo_key import DEMO_ONLY
from switchyard.stack.natsconf import ClusterLayout, NatsServerLayout, write_nats_config

if TYPE_CHECKING:
    from switchyard.stack.provision import Skipped

log = logging.getLogger("switchyard.deploy")

NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
NATS_CLUSTER_PORT = 6222
OPENBAO_PORT = 8200
VALKEY_PORT = 6379


@dataclass(frozen=True, slots=True)
class Bundle:
    """What one service may read: identity certificates (with keys), Valkey role passwords,
    the admin tokens (the admin one and the read-only one). Every bundle also gets the CA
    certificate (never its key)."""

    certs: tuple[str, ...] = ()
    valkey_roles: tuple[str, ...] = ()
    admin_token: bool = False


BUNDLES: dict[str, Bundle] = {
    # Also each node's config (setup renders them into the bundle).
    "nats": Bundle(certs=(SERVER_CERT, ROUTE_CERT)),
    # Also openbao.hcl and the unseal key; valkey: valkey.conf and users.acl.
    "openbao": Bundle(certs=(SERVER_CERT,)),
    "valkey": Bundle(),
    "tail": Bundle(certs=(identities.TAIL.name,), valkey_roles=("ingress",)),
    "gateway": Bundle(
        certs=(identities.GATEWAY.name, identities.ADMIN.name),
        valkey_roles=("ingress", "admin"),
        admin_token=True,
    ),
    "head": Bundle(certs=(identities.HEAD.name,)),
    "modelproxy": Bundle(certs=(identities.MODELPROXY.name,)),
    # Its AppRole credentials are added by `init`, once OpenBao exists.
    "secrets": Bundle(certs=(identities.SECRETS.name,)),
    "control": Bundle(certs=(identities.CONTROL.name,)),
    "accounting": Bundle(certs=(identities.ACCOUNTING.name,), valkey_roles=("accounting",)),
    "batch": Bundle(certs=(identities.BATCH.name,), valkey_roles=("batch",)),
    # For an `init` that does not share setup's state (a Kubernetes Job): provisioning as the
    # provisioner (CORE) and admin (CLIENT: the key bucket, the demo key).
    "init": Bundle(certs=(identities.PROVISIONER.name, identities.ADMIN.name)),
}


KUBERNETES_NATS_HOSTS = ("nats-0.nats", "nats-1.nats", "nats-2.nats")


@dataclass(frozen=True, slots=True)
class DeployLayout:
    """Paths and names of a container deployment (defaults: the compose file's).

    Attributes:
        state: the private state of setup/init (CA key, OpenBao root token, passwords).
        bundles: one directory per service bundle (``<bundles>/<name>``), as setup sees them.
        creds: where a service sees its own bundle.
        nats_data / openbao_data / valkey_data: the servers' data directories, as the servers
            see them.
        nats_hosts: every NATS node's host name (routes, server certificate, client URLs).
        nats_monitor_host: where NATS monitoring listens: loopback (health checks run inside
            the container) unless an autoscaler must read it (KEDA on Kubernetes).
    """

    state: Path = Path("/deploy/state")
    bundles: Path = Path("/deploy/creds")
    creds: Path = Path("/run/switchyard/creds")
    nats_data: Path = Path("/var/lib/nats")
    openbao_data: Path = Path("/var/lib/openbao")
    valkey_data: Path = Path("/var/lib/valkey")
    nats_hosts: tuple[str, ...] = ("nats-1", "nats-2", "nats-3")
    openbao_host: str = "openbao"
    nats_monitor_host: str = "127.0.0.1"
    extra_server_hosts: tuple[str, ...] = field(default=("localhost", "127.0.0.1"))

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    def bundle(self, name: str) -> Path:
        return self.bundles / name

    @property
    def server_hosts(self) -> tuple[str, ...]:
        return (*self.nats_hosts, self.openbao_host, *self.extra_server_hosts)

    def node_config(self, host: str) -> str:
        """A node's config file name inside the ``nats`` bundle: its short host name."""
        return f"{node_name(host)}.conf"


def node_name(host: str) -> str:
    """A NATS node's server name: the first label of its host name (``nats-0.nats.ns.svc``
    is ``nats-0``)."""
    return host.split(".", 1)[0]


def _install(src: Path, bundle: Path) -> None:
    """Copy ``src`` into ``bundle`` readable by its owner only (atomic replace)."""
    bundle.mkdir(parents=True, exist_ok=True)
    tmp = bundle / f".{src.name}.tmp"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, bundle / src.name)


def _install_relocated(src: Path, bundle: Path, moves: dict[Path, Path]) -> None:
    """Install a rendered config with the paths in ``moves`` replaced (longest first)."""
    text = src.read_text(encoding="utf-8")
    for old in sorted(moves, key=lambda p: len(str(p)), reverse=True):
        text = text.replace(str(old), str(moves[old]))
    bundle.mkdir(parents=True, exist_ok=True)
    tmp = bundle / f".{src.name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, bundle / src.name)


def setup(settings: Settings, layout: DeployLayout, *, rotate_ca: bool = False) -> list[str]:
    """Create what a first start needs and fill every bundle. Idempotent (unless
    ``rotate_ca``: a new CA, the old one kept as ``ca.pem.old``, and every certificate).

    Returns one line per action, for the log.
    """
    from switchyard.stack.home import READONLY_TOKEN_PREFIX, ensure_admin_token  # noqa: PLC0415

    done: list[str] = []
    clients = identities.certificate_subjects(settings.nats.internal_clients)
    results = init_certificates(
        layout.certs,
        organization=settings.certs.organization,
        validity_days=settings.certs.validity_days,
        clients=clients,
        server_hosts=layout.server_hosts,
        rotate_ca=rotate_ca,
    )
    created = [r.name for r in results if r.created]
    done.append(f"certificates: {len(results)} ({len(created)} created)")
    token = layout.state / "admin-token"
    if ensure_admin_token(token):
        done.append("admin token created")
    # As `switchyard up` does: a second token that may look and change nothing, to hand out.
    read_only = layout.state / "admin-readonly-token"
    if ensure_admin_token(read_only, READONLY_TOKEN_PREFIX):
        done.append("read-only admin token created")

    # Server configs are rendered in the private state (Valkey's role passwords and OpenBao's
    # unseal key are made there), then installed into the servers' bundles with their paths
    # moved to where the containers see them: config and keys in the bundle, data in the
    # data volume.
    vk = valkey.ValkeyLayout(dir=layout.state / "valkey", port=VALKEY_PORT, bind="0.0.0.0")  # noqa: S104  # nosec B104
    valkey.write_config(vk)
    _install_relocated(
        vk.config_file,
        layout.bundle("valkey"),
        {vk.data_dir: layout.valkey_data, vk.acl_file: layout.creds / vk.acl_file.name},
    )
    _install(vk.acl_file, layout.bundle("valkey"))
    bao = openbao.OpenBaoLayout(
        dir=layout.state / "openbao-server",
        port=OPENBAO_PORT,
        cert_dir=layout.creds,
        mount=settings.openbao.mount,
        host=layout.openbao_host,
        bind="0.0.0.0",  # noqa: S104  # nosec B104  (a container's listener; the network decides who reaches it)
    )
    openbao.write_config(bao)
    _install_relocated(
        bao.config_file,
        layout.bundle("openbao"),
        {
            bao.data_dir: layout.openbao_data,
            bao.audit_log: layout.openbao_data / bao.audit_log.name,
            bao.unseal_key: layout.creds / bao.unseal_key.name,
        },
    )
    _install(bao.unseal_key, layout.bundle("openbao"))
    for host in layout.nats_hosts:
        write_nats_config(
            _node(settings, layout, host), layout.bundle("nats") / layout.node_config(host)
        )
    done.append(f"configs: {len(layout.nats_hosts)} NATS nodes, OpenBao, Valkey")

    for name, bundle in BUNDLES.items():
        target = layout.bundle(name)
        _install(layout.certs / "ca.pem", target)
        for cert in bundle.certs:
            files = tls_files(layout.certs, cert)
            _install(files.cert, target)
            _install(files.key, target)
        for role in bundle.valkey_roles:
            _install(vk.password_file(role), target)
        if bundle.admin_token:
            _install(token, target)
            _install(read_only, target)
    done.append(f"bundles: {', '.join(BUNDLES)}")
    return done


def _node(settings: Settings, layout: DeployLayout, host: str) -> NatsServerLayout:
    routes = tuple(f"tls://{h}:{NATS_CLUSTER_PORT}" for h in layout.nats_hosts)
    return NatsServerLayout(
        port=NATS_PORT,
        monitor_port=NATS_MONITOR_PORT,
        store_dir=layout.nats_data / "jetstream",
        cert_dir=layout.creds,
        organization=settings.certs.organization,
        response_threshold_s=settings.nats.response_threshold_s,
        internal_clients=settings.nats.internal_clients,
        server_name=node_name(host),
        host="0.0.0.0",  # noqa: S104  # nosec B104  (clients reach it over the container networks)
        # Monitoring has no authentication: it stays inside the container unless asked.
        monitor_host=layout.nats_monitor_host,
        cluster=ClusterLayout(port=NATS_CLUSTER_PORT, routes=routes, host="0.0.0.0")  # noqa: S104  # nosec B104
        if len(layout.nats_hosts) > 1
        else None,
    )


def init(
    settings: Settings, layout: DeployLayout, timeout: float = 180.0
) -> tuple[list[str], list[Skipped]]:
    """Initialise OpenBao and provision NATS once the servers run. Idempotent. Returns what
    was done, and the buckets the provisioning had to skip (an older version's NATS config).

    Raises:
        StackError: a server stayed unreachable or refused provisioning past ``timeout``.
    """
    from switchyard.stack.local import provision_stack  # noqa: PLC0415

    done = []
    deadline = time.monotonic() + timeout
    bao = openbao.OpenBaoLayout(
        dir=layout.state / "openbao",
        port=OPENBAO_PORT,
        cert_dir=settings.certs_dir,
        mount=settings.openbao.mount,
        host=layout.openbao_host,
    )
    bao.dir.mkdir(parents=True, exist_ok=True)
    _wait_listening(bao, deadline)
    openbao.bootstrap(bao, max(1.0, deadline - time.monotonic()))
    for path in (bao.role_id, bao.secret_id):
        _install(path, layout.bundle("secrets"))
    done.append("OpenBao initialised; AppRole credentials in the secrets bundle")

    skipped: list[Skipped] = []

    async def provision() -> None:
        skipped[:] = await provision_stack(
            settings, demo_key=settings.demo_model, demo_models=DEMO_ONLY, timeout=3.0
        )

    async def until_ready() -> None:
        await natsnodes.until_jetstream_ready(
            provision, timeout=max(1.0, deadline - time.monotonic())
        )

    asyncio.run(until_ready())
    done.append("streams, consumers and KV buckets provisioned")
    return done, skipped


def _wait_listening(layout: openbao.OpenBaoLayout, deadline: float) -> None:
    url = f"{layout.addr}/v1/sys/health"
    while True:
        try:
            requests.get(url, verify=str(layout.cert_dir / "ca.pem"), timeout=2)
            return
        except requests.RequestException as exc:
            if time.monotonic() > deadline:
                raise StackError("openbao", f"not reachable at {layout.addr}: {exc}") from exc
        time.sleep(0.5)
