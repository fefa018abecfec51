"""A long request's ack waits for the server's confirmation (``Serving.ack``); when
none can come (its consumer was deleted meanwhile: no responder), the answer already sent
stands: the failure is logged, never raised into the handler, which would answer the caller a
second time with an internal error."""

from __future__ import annotations

import logging
import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.serving import Serving
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_an_unconfirmable_ack_is_logged_not_raised(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await stack.connect("modelproxy")
    try:
        stored = time.time_ns()
        msg = Msg(
            _client=nc,
            subject="llm.v1.dispatch.fake.gone",
            reply=f"$JS.ACK.DISPATCH.no-such-consumer.1.7.7.{stored}.0",
            data=b"{}",
        )
        env = Envelope(request_id="r-ack", op="chat", reply="_INBOX_e.r")
        job = Job(
            msg=msg,
            env=env,
            deployment_id="fake.gone",
            inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
        )
        job.inflight.signalled = True  # it ran long enough to need progress signals
        with caplog.at_level(logging.INFO, logger="switchyard.modelproxy"):
            await Serving(ack_wait_s=2).ack(job)
        assert job.acked
        said = [r.getMessage() for r in caplog.records if "did not confirm" in r.getMessage()]
        assert said, caplog.text
    finally:
        await nc.close()
