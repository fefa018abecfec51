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
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.errors import Error as NatsError

from switchyard.config import Settings
from switchyard.errors import BusError, StackError
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


def _holds_data(store: Path) -> bool:
    return store.is_dir() and any(path.is_file() for path in store.rglob("*"))


def other_stores(settings: Settings, home: StackHome) -> list[Path]:
    """The JetStream stores in ``home`` that hold data but are not the planned nodes'.

    A single node and a cluster keep their data in different places, so they are what a
    change of ``stack.nats_nodes`` left behind.
    """
    planned = {node.layout.store_dir for node in plan_nodes(settings, home)}
    found = [home.nats_store, *sorted(home.nats.glob("jetstream-*"))]
    return [store for store in found if store not in planned and _holds_data(store)]


def check_store_layout(settings: Settings, home: StackHome) -> None:
    """Refuse to start on an empty store beside one written for another node count.

    Started anyway, the new nodes came up healthy on an empty store: every client key
    answered 401, run-time routes, batches and files were gone (still on disk, unused), and
    a second demo key was minted over the first one's file. Going back to the old count
    brought the old data back and lost what was made in between.

    Raises:
        StackError: such a store exists; the message says where, and what to do.
    """
    stale = other_stores(settings, home)
    if not stale:
        return
    count = settings.stack.nats_nodes
    old_count = 1 if home.nats_store in stale else 3
    ours = [node.layout.store_dir for node in plan_nodes(settings, home)]
    where = ", ".join(str(store) for store in stale)
    remove = " ".join(shlex.quote(str(store)) for store in stale)
    raise StackError(
        "up",
        f"this home holds JetStream data written by {_layout(old_count)} ({where}), but "
        f"stack.nats_nodes is {count}, which keeps its data in {', '.join(map(str, ours))}, "
        "and NATS does not carry a store over to another node count. Started like this, it "
        "would run on an empty store: every client key would answer 401 and the run-time "
        "routes, batches and files would be missing. Nothing was started. To keep the data, "
        f"set stack.nats_nodes back to {old_count}. To run {_layout(count)} on an empty "
        f"store instead, delete the old store first (`rm -rf {remove}`) or use a new home; "
        'client keys cannot be carried over (see "Changing the node count" in '
        "docs/operations.md)",
    )


def _layout(count: int) -> str:
    return "a single NATS node" if count == 1 else f"a {count}-node NATS cluster"


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
