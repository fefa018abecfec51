"""A service whose certificate the NATS server does not know must fail to start, saying why,
not wait for ever (nats-py retries a refused first login without end)."""

from __future__ import annotations

import asyncio
import time

import pytest

from switchyard.bus.connect import connect
from switchyard.errors import BusUnreachable
from switchyard.stack.certs import CertificateAuthority
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_service_identity_the_server_does_not_know_fails_fast(stack: Stack) -> None:
    settings = stack.settings
    ca, _ = CertificateAuthority.load_or_create(
        settings.certs_dir, settings.certs.organization, settings.certs.validity_days
    )
    ca.issue(
        settings.certs_dir,
        "stranger",
        cn="stranger",
        ou="client",
        organization=settings.certs.organization,
        validity_days=1,
    )
    started = time.monotonic()
    with pytest.raises(BusUnreachable, match=r"(?i)authorization violation") as refused:
        # A service's settings: unlimited reconnects. The bound only keeps a regression
        # from hanging the suite.
        await asyncio.wait_for(connect(settings.nats_servers, settings.certs_dir, "stranger"), 60)
    assert refused.value.identity == "stranger"
    assert time.monotonic() - started < 30
