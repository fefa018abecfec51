"""`switchyard up` probes an ingress where it listens: with ``ingress.gateway.host: "::"`` it
probed 127.0.0.1, which an IPv6-only listener never answers, and said "gateway: did not start
in 60s" of a gateway that was serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchyard.stack import local
from switchyard.stack.ports import listen_port
from switchyard.stack.process import http_status
from tests.portrange import worker_range
from tests.support import write_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "probed"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104 (a wildcard listener's settings)
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("192.0.2.10", "192.0.2.10"),
        ("localhost", "localhost"),
    ],
)
def test_a_listen_address_is_probed_on_the_loopback_of_its_family(host: str, probed: str) -> None:
    assert local.probe_host(host) == probed


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def test_a_gateway_listening_on_the_ipv6_wildcard_is_found_up(tmp_path: Path) -> None:
    port = listen_port(within=worker_range())
    settings, _ = write_settings(tmp_path, {"ingress": {"gateway": {"host": "::", "port": port}}})
    gateway = next(
        step.spec
        for step in local.components(settings, {}, local.component_specs(settings))
        if step.spec.name == "gateway"
    )
    assert gateway.health_url == f"http://[::1]:{port}/ready"
    assert gateway.endpoint == f"http://[::1]:{port}"
    # asyncio, like the gateway's server, makes a listener on "::" IPv6-only.
    server = await asyncio.start_server(_answer, host="::", port=port)
    try:
        assert await http_status(gateway.health_url) == 200
        assert gateway.health is not None
        assert await gateway.health()
    finally:
        server.close()
        await server.wait_closed()
