"""The local stack's nats-servers: one node, or a 3-node cluster on loopback.

A cluster keeps serving when one node is lost: every stream and bucket is R3 (a node holds a
full copy of each), clients know every node's URL and reconnect to a survivor, and the dead
node catches up when it returns. Node ``n`` (from 1) listens on the configured base ports plus
``n - 1``; its config, JetStream store and log are its own (``nats/nats-<n>.conf``,
``nats/jetstream-<n>``, ``logs/nats-<n>.log``). A single node keeps the historical layout
(``nats/nats-server.conf``, ``nats/jetstream``, process ``nats-server``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.errors import Error as NatsError

from switchyard.config import Settings
from switchyard.errors import BusError
from switchyard.stack.home import StackHome
from switchyard.stack.natsconf import ClusterLayout, NatsServerLayout, write_nats_config

log = logging.getLogger("switchyard.stack")


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One planned nats-server of the local stack."""

    name: str  # process name
    layout: NatsServerLayout
    config_file: Path

    @property
    def health_url(self) -> str:
        # A cluster node is healthy once it knows the JetStream meta leader and its streams
        # are current; a single node only needs JetStream enabled.
        query = "" if self.layout.cluster else "?js-enabled-only=true"
        return f"http://127.0.0.1:{self.layout.monitor_port}/healthz{query}"

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.layout.port}"


def plan_nodes(settings: Settings, home: StackHome) -> list[NatsNode]:
    """The nodes ``settings.stack.nats_nodes`` asks for, with their configs (not written)."""
    st = settings.stack
    count = st.nats_nodes
    routes = tuple(f"tls://127.0.0.1:{st.nats_cluster_port + i}" for i in range(count))
    nodes = []
    for n in range(1, count + 1):
        clustered = count > 1
        layout = NatsServerLayout(
            port=st.nats_port + n - 1,
            monitor_port=st.nats_monitor_port + n - 1,
            store_dir=home.nats / f"jetstream-{n}" if clustered else home.nats_store,
            cert_dir=settings.certs_dir,
            organization=settings.certs.organization,
            response_threshold_s=settings.nats.response_threshold_s,
            internal_clients=settings.nats.internal_clients,
            server_name=f"switchyard-{n}",
            cluster=ClusterLayout(port=st.nats_cluster_port + n - 1, routes=routes)
            if clustered
            else None,
        )
        name, config = (
            (f"nats-{n}", home.nats / f"nats-{n}.conf")
            if clustered
            else ("nats-server", home.nats_config)
        )
        nodes.append(NatsNode(name, layout, config))
    return nodes


def write_configs(nodes: list[NatsNode]) -> None:
    for node in nodes:
        write_nats_config(node.layout, node.config_file)


async def until_jetstream_ready(
    run: Callable[[], Awaitable[None]], *, timeout: float, pause: float = 0.5
) -> None:
    """Run ``run`` until it succeeds: a new cluster answers "JetStream not ready" (10008) or
    times out until its meta leader is elected and every node has caught up.

    Raises:
        the last error, once ``timeout`` has passed.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        try:
            await run()
            return
        except (NatsError, BusError, TimeoutError) as exc:
            if loop.time() + pause > give_up:
                raise
            log.info("JetStream not ready yet (%s); retrying", exc)
            await asyncio.sleep(pause)
