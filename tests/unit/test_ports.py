"""Listener ports for local processes come from below the ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from switchyard.stack.ports import ephemeral_low, listen_port, port_free

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
