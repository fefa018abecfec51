"""A puller refuses timings JetStream would refuse on every pull request."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.runtime.puller import Puller


async def _handle(_msg: Msg, _deployment: str) -> None:
    return None


@pytest.mark.parametrize(("expires", "heartbeat"), [(60.0, 60.0), (60.0, 30.01), (10.0, 0.0)])
def test_a_heartbeat_over_half_the_expiry_is_refused(expires: float, heartbeat: float) -> None:
    with pytest.raises(ValueError, match="at most half its expires"):
        Puller(NATS(), "dep", 4, _handle, expires=expires, heartbeat=heartbeat)


def test_the_defaults_and_exactly_half_are_accepted() -> None:
    assert Puller(NATS(), "dep", 4, _handle).capacity == 4
    assert Puller(NATS(), "dep", 4, _handle, expires=20.0, heartbeat=10.0).capacity == 4
