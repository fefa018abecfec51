"""What ``switchyard up`` runs: the servers, their configs and hooks, then the components.

This module only *plans*: it renders configs and returns phases of steps for the supervisor.
Components are started as ``python -m switchyard serve <component>`` with the same config file
and the resolved ports in ``SWITCHYARD_*`` variables, so every process sees identical settings.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec

from switchyard.admin.token import load_read_only_token, load_token
from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.config import Settings, StackSettings
from switchyard.errors import StackError
from switchyard.stack import binaries, natsnodes, openbao, valkey
from switchyard.stack.certs import init_certificates
from switchyard.stack.home import READONLY_TOKEN_PREFIX, StackHome, ensure_admin_token
from switchyard.stack.ports import listen_port, port_free
from switchyard.stack.process import ProcessSpec, http_check, http_status, redis_ping_check
from switchyard.stack.provision import Skipped, provision_client, provision_core
from switchyard.stack.supervisor import Step, Supervisor


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A Switchyard service the local stack runs.

    Attributes:
        component: the ``switchyard serve`` argument.
        replicas: how many processes.
        http_port: fixed HTTP port for an ingress (None for workers, which get a free
            health port each).
        http_host: the ingress's listen address (workers': ``health.host``).
    """

    component: str
    replicas: int = 1
    http_port: int | None = None
    http_host: str = "127.0.0.1"


def probe_host(host: str) -> str:
    """Where ``up`` reaches a server listening on ``host``, as a URL's host: this machine's
    loopback of the same family for a wildcard (``::`` may take IPv6 only, so 127.0.0.1
    would never answer), else the address itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"  # a name
    if address.version == 4:
        return "127.0.0.1" if address.is_unspecified else host
    return "[::1]" if address.is_unspecified else f"[{host}]"


_PORT_ENV = {
    "nats_port": "SWITCHYARD_STACK__NATS_PORT",
    "nats_monitor_port": "SWITCHYARD_STACK__NATS_MONITOR_PORT",
    "nats_cluster_port": "SWITCHYARD_STACK__NATS_CLUSTER_PORT",
    "openbao_port": "SWITCHYARD_STACK__OPENBAO_PORT",
    "valkey_port": "SWITCHYARD_STACK__VALKEY_PORT",
}


def _span(settings: Settings, field: str) -> int:
    """How many consecutive ports a setting stands for."""
    if field.startswith("nats_"):
        return settings.stack.nats_nodes  # one per node
    return 2 if field == "openbao_port" else 1  # OpenBao: API and cluster address


def planned_ports(settings: Settings) -> set[int]:
    """Every port the settings already name (0s left out), with their spans.

    A free-port pick must avoid these even before their processes bind them: a health
    port chosen for a head once landed on the port the tail was about to listen on.
    """
    ports: set[int] = set()
    for field in _PORT_ENV:
        first = getattr(settings.stack, field)
        if first:
            ports.update(range(first, first + _span(settings, field)))
    for ingress in (settings.ingress.tail, settings.ingress.gateway):
        if ingress.port:
            ports.add(ingress.port)
    return ports


def resolve_ports(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """Replace port 0 with free ports and check the others are free.

    Returns the resolved settings and the environment that gives children the same view.

    Raises:
        StackError: a configured port is already in use.
    """
    chosen: dict[str, int] = {}
    env: dict[str, str] = {}
    promised = planned_ports(settings)
    for field, var in _PORT_ENV.items():
        port = getattr(settings.stack, field)
        span = _span(settings, field)
        if field == "nats_cluster_port" and settings.stack.nats_nodes == 1:
            continue  # no routes to listen for
        if port == 0:
            port = listen_port(span=span, avoid=promised, within=settings.stack.free_ports)
        elif not all(port_free(p) for p in range(port, port + span)):
            raise StackError(
                "up",
                f"port {port} ({field}, {span} from there) is in use: another stack may be "
                f"running. Stop it (`switchyard down`), or choose another port with "
                f"stack.{field} or {var}=0 for a free one",
            )
        chosen[field] = port
        env[var] = str(port)
    for name, ingress in (("tail", settings.ingress.tail), ("gateway", settings.ingress.gateway)):
        if ingress.port and not port_free(ingress.port):
            # Unchecked, `up` said it was up: the other program's server answered the health
            # probe and the printed curl, and this edge crash-looped on "address in use".
            raise StackError(
                "up",
                f"port {ingress.port} (ingress.{name}.port, the {name}'s HTTP port) is in "
                "use: another stack or program listens there. Stop it, or choose another "
                f"port with ingress.{name}.port or SWITCHYARD_INGRESS__{name.upper()}__PORT",
            )
    stack = msgspec.structs.replace(settings.stack, **chosen)
    return msgspec.structs.replace(settings, stack=stack), env


def ensure_certificates(settings: Settings, force: bool = False) -> None:
    clients = identities.certificate_subjects(settings.nats.internal_clients)
    init_certificates(
        settings.certs_dir,
        organization=settings.certs.organization,
        validity_days=settings.certs.validity_days,
        clients=clients,
        force=force,
    )


def prepare_home(settings: Settings) -> None:
    """Everything a first start needs before any process runs: certificates, the admin token
    and the read-only one."""

    ensure_certificates(settings)
    ensure_admin_token(settings.admin_token_file)
    ensure_admin_token(settings.admin_readonly_token_file, READONLY_TOKEN_PREFIX)
    # A short one (or a read-only token that is the admin token): refused now, not by the
    # gateway.
    token = load_token(settings.admin_token_file)
    load_read_only_token(settings.admin_readonly_token_file, token)


def _ca_context(settings: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.certs_dir / "ca.pem"))


def infrastructure(settings: Settings, home: StackHome) -> list[Step]:
    """nats-server, Valkey and OpenBao, with their configs written and hooks attached."""
    st: StackSettings = settings.stack
    nodes = natsnodes.plan_nodes(settings, home)
    natsnodes.write_configs(nodes)

    async def provision() -> None:
        # A cluster's API is briefly silent while stream leaders are elected after a restart:
        # short calls, retried, beat one long wait.
        # (This version renders the NATS config above: nothing is skipped.)
        async def run() -> None:
            await provision_stack(
                settings, demo_key=settings.demo_model, timeout=3.0 if len(nodes) > 1 else 10.0
            )

        await natsnodes.until_jetstream_ready(run, timeout=st.start_timeout_s)

    bao = openbao.OpenBaoLayout(
        dir=home.openbao,
        port=st.openbao_port,
        cert_dir=settings.certs_dir,
        mount=settings.openbao.mount,
    )
    openbao.write_config(bao)
    bao_health = f"{bao.addr}/v1/sys/health"
    ca = _ca_context(settings)

    async def bao_listening() -> bool:
        return await http_status(bao_health, ca) != 0

    async def bao_bootstrap() -> None:
        await asyncio.to_thread(openbao.bootstrap, bao, settings.stack.start_timeout_s)

    vk = valkey.ValkeyLayout(dir=home.valkey, port=st.valkey_port)
    valkey.write_config(vk)
    return [
        *(
            Step(
                ProcessSpec(
                    name=node.name,
                    argv=[str(binaries.nats_server()), "-c", str(node.config_file)],
                    health=http_check(node.health_url),
                    health_url=node.health_url,
                    kind="server",
                    endpoint=node.url,
                    env={"GOMAXPROCS": str(st.nats_cpus)} if st.nats_cpus else {},
                ),
                # Every node must be up before streams can be placed on three of them.
                after_start=provision if node is nodes[-1] else None,
            )
            for node in nodes
        ),
        Step(
            ProcessSpec(
                name="valkey",
                argv=[str(binaries.valkey_server()), str(vk.config_file)],
                health=redis_ping_check("127.0.0.1", st.valkey_port),
                health_url=f"redis://127.0.0.1:{st.valkey_port}",
                kind="server",
                endpoint=f"redis://127.0.0.1:{st.valkey_port}",
            )
        ),
        Step(
            ProcessSpec(
                name="openbao",
                argv=[str(binaries.openbao()), "server", "-config", str(bao.config_file)],
                health=http_check(bao_health, ca),
                health_url=bao_health,
                kind="server",
                endpoint=bao.addr,
                # OpenBao reads these before its config: keep the operator's shell out of it.
                # One P: it serves a few key reads a minute, and with two its idle timers each
                # wake a second thread to steal work (idle: ~5.0 -> ~3.8 ms of CPU a second).
                env={
                    "BAO_ADDR": bao.addr,
                    "BAO_CACERT": str(settings.certs_dir / "ca.pem"),
                    "GOMAXPROCS": "1",
                },
            ),
            started=bao_listening,
            after_start=bao_bootstrap,
        ),
    ]


async def provision_stack(
    settings: Settings,
    *,
    demo_key: bool = False,
    demo_models: tuple[str, ...] | None = None,
    one_shot: bool = False,
    timeout: float = 10.0,
) -> list[Skipped]:
    """Provision CORE as the provisioner and CLIENT as admin (idempotent). Returns the buckets
    it had to skip (the NATS config of an older version), empty when none.

    Args:
        demo_key: also make sure the demo client key exists.
        demo_models: the only models the demo key may use (None: the demo model only).
        one_shot: fail at once when NATS does not answer (the CLI) instead of waiting for it.
        timeout: per JetStream API call.
    """
    servers = settings.nats_servers
    attempts = 0 if one_shot else -1
    nc = await connect(
        servers, settings.certs_dir, identities.PROVISIONER.name, max_reconnect_attempts=attempts
    )
    try:
        await provision_core(nc, settings, timeout=timeout)
    finally:
        await nc.close()
    nc = await connect(
        servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=attempts
    )
    try:
        skipped = await provision_client(nc, settings, timeout=timeout)
    finally:
        await nc.close()
    if demo_key:
        from switchyard.stack.demo_key import ensure_demo_key  # noqa: PLC0415

        await ensure_demo_key(settings, models=demo_models)
    return skipped


def component_specs(settings: Settings) -> list[ComponentSpec]:
    """The Switchyard services of the local stack, in start order within their phase."""
    st = settings.stack
    return [
        ComponentSpec("secrets"),
        ComponentSpec("control"),
        ComponentSpec("accounting"),
        ComponentSpec("head", replicas=st.heads),
        ComponentSpec("modelproxy", replicas=st.modelproxies),
        ComponentSpec("batch"),
        ComponentSpec(
            "tail", http_port=settings.ingress.tail.port, http_host=settings.ingress.tail.host
        ),
        ComponentSpec(
            "gateway",
            http_port=settings.ingress.gateway.port,
            http_host=settings.ingress.gateway.host,
        ),
    ]


def components(settings: Settings, env: dict[str, str], specs: list[ComponentSpec]) -> list[Step]:
    """One step per component replica, each a ``switchyard serve`` process."""
    steps = []
    promised = planned_ports(settings) | {s.http_port for s in specs if s.http_port}
    for spec in specs:
        for n in range(1, spec.replicas + 1):
            instance = spec.component if spec.replicas == 1 else f"{spec.component}-{n}"
            if spec.http_port is not None:
                host = probe_host(spec.http_host)
                port, endpoint = spec.http_port, f"http://{host}:{spec.http_port}"
            else:
                host = probe_host(settings.health.host)
                port = listen_port(avoid=promised, within=settings.stack.free_ports)
                endpoint = None
            health = f"http://{host}:{port}/ready"
            argv = [
                sys.executable,
                "-m",
                "switchyard",
                "serve",
                spec.component,
                "--instance",
                instance,
            ]
            if spec.http_port is None:
                argv += ["--health-port", str(port)]
            steps.append(
                Step(
                    ProcessSpec(
                        name=instance,
                        argv=argv,
                        health=http_check(health),
                        health_url=health,
                        kind="component",
                        endpoint=endpoint,
                        env=env,
                    )
                )
            )
    return steps


def child_env(
    settings: Settings, config_file: Path | None, port_env: dict[str, str]
) -> dict[str, str]:
    """The environment every component gets: same config file, same home, same ports."""
    env = {"SWITCHYARD_HOME": str(settings.home_dir), **port_env}
    if config_file is not None:
        env["SWITCHYARD_CONFIG"] = str(config_file.resolve())
    return env


def stack_supervisor(
    settings: Settings,
    home: StackHome,
    components: list[Step],
    info: dict[str, object] | None = None,
) -> Supervisor:
    """The supervisor of a local stack: the infrastructure phase, then ``components``."""
    phases = [infrastructure(settings, home)]
    if components:
        phases.append(components)
    return Supervisor(
        phases,
        log_dir=home.logs,
        state_file=home.state_file,
        start_timeout=settings.stack.start_timeout_s,
        stop_timeout=settings.stack.stop_timeout_s,
        info=dict(info or {}),
        log_max_bytes=int(settings.stack.log_max_mb * 1024 * 1024),
        log_keep=settings.stack.log_keep,
        # OpenBao's audit log takes two lines of every request: without rotation it grew by
        # ~600 MB a day while an admin overview was open. OpenBao appends to it, so a copy and
        # truncate is safe (it writes on at the new end, as the children do to theirs).
        other_logs=(home.openbao / openbao.AUDIT_LOG,),
    )
