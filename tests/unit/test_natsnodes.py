"""The local stack's NATS plan: one node as before, or three with routes and R3."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.config import load_settings
from switchyard.runtime import definitions
from switchyard.stack.home import StackHome
from switchyard.stack.natsconf import nats_config
from switchyard.stack.natsnodes import plan_nodes

pytestmark = pytest.mark.unit


def test_one_node_keeps_the_historical_layout(tmp_path: Path) -> None:
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path)})
    (node,) = plan_nodes(settings, StackHome(tmp_path))
    assert node.name == "nats-server"
    assert node.config_file == tmp_path / "nats" / "nats-server.conf"
    assert node.layout.cluster is None
    assert node.health_url.endswith("/healthz?js-enabled-only=true")
    assert settings.nats_servers == ("tls://127.0.0.1:4222",)
    assert settings.stream_replicas == 1


def test_three_nodes_route_to_each_other_over_tls(tmp_path: Path) -> None:
    overrides = {"home": str(tmp_path), "stack": {"nats_nodes": 3, "nats_port": 5000}}
    settings = load_settings(None, env={}, overrides=overrides)
    nodes = plan_nodes(settings, StackHome(tmp_path))
    assert [n.name for n in nodes] == ["nats-1", "nats-2", "nats-3"]
    assert [n.layout.port for n in nodes] == [5000, 5001, 5002]
    assert [n.layout.monitor_port for n in nodes] == [8222, 8223, 8224]
    assert len({n.layout.store_dir for n in nodes}) == 3
    assert settings.nats_servers == tuple(f"tls://127.0.0.1:{p}" for p in (5000, 5001, 5002))
    assert settings.stream_replicas == 3
    doc = nats_config(nodes[1].layout)
    assert doc["server_name"] == "switchyard-2"
    cluster = doc["cluster"]
    assert cluster["listen"] == "127.0.0.1:6223"
    assert cluster["routes"] == [f"tls://127.0.0.1:{p}" for p in (6222, 6223, 6224)]
    assert cluster["tls"]["verify"] is True
    assert cluster["no_advertise"] is True  # clients reconnect only to the configured nodes
    assert cluster["tls"]["cert_file"].endswith("route.pem")
    # Health waits for the meta leader and current streams, not just JetStream enabled.
    assert nodes[0].health_url.endswith("/healthz")


def test_explicit_replicas_win(tmp_path: Path) -> None:
    overrides = {"nats": {"servers": ["tls://a:4222"], "stream_replicas": 3}}
    assert load_settings(None, env={}, overrides=overrides).stream_replicas == 3
    three = {"nats": {"servers": ["tls://a:4222", "tls://b:4222", "tls://c:4222"]}}
    assert load_settings(None, env={}, overrides=three).stream_replicas == 3


def test_every_stream_and_bucket_is_replicated_on_three_nodes(tmp_path: Path) -> None:
    """HOLD and the files store once kept the raw setting (0, so one replica): a node loss
    took the held requests (and Batch files) with it until the node came back."""
    overrides = {"home": str(tmp_path), "stack": {"nats_nodes": 3}}
    settings = load_settings(None, env={}, overrides=overrides)
    streams = (
        definitions.dispatch_stream_config(settings),
        definitions.hold_stream_config(settings),
        definitions.usage_stream_config(settings),
        definitions.audit_stream_config(settings),
    )
    assert {str(c.name): c.num_replicas for c in streams} == {
        "DISPATCH": 3,
        "HOLD": 3,
        "USAGE": 3,
        "AUDIT": 3,
    }
    buckets = {b: definitions.bucket_config(b, settings).replicas for b in definitions.BUCKETS}
    assert set(buckets.values()) == {3}, buckets
    assert definitions.files_store_config(settings).replicas == 3


def test_the_server_drops_a_client_that_stops_answering_within_a_minute(tmp_path: Path) -> None:
    """A hung head (SIGSTOP, a stuck loop) kept its queue-group subscription for minutes
    with nats-server's default pings (every 2 min, 2 missed), and each request NATS gave it
    waited out the edge's 10 s accept timeout. The server now pings every 10 s and drops a
    client after 3 unanswered (every integration test's server runs this config)."""
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path)})
    (node,) = plan_nodes(settings, StackHome(tmp_path))
    doc = nats_config(node.layout)
    seconds = int(doc["ping_interval"].removesuffix("s"))
    assert seconds * (doc["ping_max"] + 1) <= 60
