"""Admin calls to the secrets and control services across accounts, on a real zoned server:
"no responders" is retried briefly (a service restarting answers a moment later), then it is a
clear 503; nothing else is retried."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from switchyard.bus.admin_call import NO_RESPONDERS_RETRY_S, call
from switchyard.errors import ServiceUnavailable
from tests.support import flushed
from tests.test_zones import SECRET_ADMIN, Zone, _as, zone  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


async def test_a_service_that_subscribes_a_moment_late_still_answers(zone: Zone) -> None:  # noqa: F811
    admin, _ = await _as(zone, "admin")
    secrets_nc, _ = await _as(zone, "secrets")

    async def answer(msg: Msg) -> None:
        await secrets_nc.publish(msg.reply, b"meta")

    async def subscribe_late() -> None:
        await asyncio.sleep(0.5)
        await secrets_nc.subscribe("secrets.v1.admin.>", queue="secrets", cb=answer)
        await flushed(secrets_nc)

    try:
        late = asyncio.create_task(subscribe_late())
        assert await call(admin, SECRET_ADMIN, b"{}", service="secrets") == b"meta"
        await late
    finally:
        await secrets_nc.close()
        await admin.close()


async def test_a_service_that_is_not_running_is_a_503_after_the_retries(zone: Zone) -> None:  # noqa: F811
    admin, _ = await _as(zone, "admin")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ServiceUnavailable) as down:
            await call(admin, SECRET_ADMIN, b"{}", service="secrets")
    finally:
        await admin.close()
    assert down.value.code == "secrets_down"
    assert "not running" in down.value.message
    assert NO_RESPONDERS_RETRY_S - 0.5 <= loop.time() - started < NO_RESPONDERS_RETRY_S + 1.5
