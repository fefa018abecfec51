"""Listener ports for local processes come from below the ephemeral range."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from switchyard.errors import ConfigError, StackError
from switchyard.stack import local
from switchyard.stack.ports import (
    accepting,
    default_range,
    ephemeral_low,
    listen_port,
    port_free,
)
from tests.portrange import worker_range
from tests.support import write_settings

pytestmark = pytest.mark.unit


def test_ephemeral_low_reads_the_kernel_range(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert ephemeral_low(f) == 40000


def test_ephemeral_low_falls_back_when_unreadable(tmp_path: Path) -> None:
    assert ephemeral_low(tmp_path / "missing") == 32768
    (tmp_path / "garbage").write_text("nonsense")
    assert ephemeral_low(tmp_path / "garbage") == 32768


def test_listen_port_is_below_the_ephemeral_range_and_bindable() -> None:
    port = listen_port()
    assert port < ephemeral_low()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_listen_port_span_gives_consecutive_free_ports() -> None:
    port = listen_port(span=2)
    assert port_free(port)
    assert port_free(port + 1)


def test_listen_port_never_repeats_a_promised_port() -> None:
    promised: set[int] = set()
    ports = [listen_port(avoid=promised) for _ in range(50)]
    assert len(set(ports)) == 50
    assert promised == set(ports)


def test_port_free_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_free(sock.getsockname()[1])


def test_a_health_port_never_lands_on_a_port_the_settings_name(tmp_path: Path) -> None:
    """The pick that would come next is given to the tail; the head must get another."""
    random.seed(1234)
    next_pick = listen_port(within=worker_range())  # the range write_settings gives the stack
    settings, _ = write_settings(tmp_path, {"ingress": {"tail": {"port": next_pick}}})
    random.seed(1234)
    steps = local.components(settings, {}, [local.ComponentSpec("head")])
    health_port = int((steps[0].spec.health_url or "").rsplit(":", 1)[1].split("/")[0])
    assert health_port != next_pick
    assert health_port not in local.planned_ports(settings)


@pytest.mark.parametrize("ingress", ["tail", "gateway"])
def test_up_refuses_an_ingress_port_in_use(tmp_path: Path, ingress: str) -> None:
    """A newcomer's tail port was taken by another stack: `up` said it was up, its printed
    curl reached the other stack, and the new tail crash-looped on "address already in use"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        settings, _ = write_settings(tmp_path, {"ingress": {ingress: {"port": taken}}})
        with pytest.raises(StackError) as refused:
            local.resolve_ports(settings)
    assert f"port {taken} (ingress.{ingress}.port" in str(refused.value)
    assert f"SWITCHYARD_INGRESS__{ingress.upper()}__PORT" in str(refused.value)
    local.resolve_ports(settings)  # free again: accepted


def test_planned_ports_cover_spans_and_ingresses(tmp_path: Path) -> None:
    settings, _ = write_settings(tmp_path, {"ingress": {"gateway": {"port": 21001}}})
    planned = local.planned_ports(settings)
    bao = settings.stack.openbao_port
    assert {bao, bao + 1, settings.stack.nats_port, settings.stack.valkey_port} <= planned
    assert 21001 in planned


async def test_accepting_waits_for_a_listener_and_gives_up_without_one() -> None:
    port = listen_port()
    assert not await accepting(port, within_s=0.1)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        assert await accepting(port, within_s=1.0)
    finally:
        server.close()
        await server.wait_closed()


def test_listen_port_picks_only_within_the_range_it_is_given() -> None:
    low = listen_port()  # a free spot to build a small range on
    within = (low, low + 3)
    ports = {listen_port(within=within, avoid=set()) for _ in range(40)}
    assert ports <= set(range(low, low + 4))


def test_two_xdist_workers_get_disjoint_port_slices_within_the_default_range() -> None:
    low, high = default_range()
    env = {"PYTEST_XDIST_WORKER_COUNT": "2"}
    first = worker_range({**env, "PYTEST_XDIST_WORKER": "gw0"})
    second = worker_range({**env, "PYTEST_XDIST_WORKER": "gw1"})
    assert low <= first[0] <= first[1] < second[0] <= second[1] <= high
    assert worker_range({}) == (low, high)


def test_a_stack_picks_its_health_ports_within_stack_free_ports(tmp_path: Path) -> None:
    low = listen_port()
    settings, _ = write_settings(tmp_path / "home", {"stack": {"free_ports": [low, low + 9]}})
    steps = local.components(settings, {}, [local.ComponentSpec("head", replicas=3)])
    ports = [int((s.spec.health_url or "").rsplit(":", 1)[1].split("/")[0]) for s in steps]
    assert len(set(ports)) == 3
    assert all(low <= p <= low + 9 for p in ports)


def test_a_backwards_free_port_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stack\.free_ports"):
        write_settings(tmp_path / "home", {"stack": {"free_ports": [30000, 29000]}})
