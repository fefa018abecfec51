"""An expired held request whose delete from HOLD got no answer is tried again, then answered.

The feeder deletes an expired held request from HOLD before it answers 504 (only the feeder
whose delete removed it answers). A delete that got no answer at all (timeouts: a HOLD stream
leader election, a refusal) marked it finished anyway, and the next purge dropped it, unanswered:
most often the delete had never happened. Now it stays in HOLD and the tick tries the delete
again (for ``DELETE_RETRY_S``); once one goes through, its caller gets its 504.

A real nats-server whose configuration first refuses the feeder's user the delete (a permission
violation: the request goes unanswered, as in an election) and then, reloaded, allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.control.feeder import Feeder
from switchyard.control.holdpurge import PURGE_BATCH
from switchyard.runtime import definitions
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.routing import RouteTable
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from tests.support import flushed, free_port, until, write_settings

pytestmark = pytest.mark.integration

DEP = "p--m"
REPLY = "_R_.caller.retry"
NAME = "sy-held-delete-retry"
DELETE = f"$JS.API.STREAM.MSG.DELETE.{subjects.HOLD_STREAM}"


def _config(port: int, store: Path, name: str, *, deny_delete: bool) -> str:
    deny = f'publish: {{ deny: ["{DELETE}"] }}' if deny_delete else ""
    return f"""
listen: "127.0.0.1:{port}"
server_name: "{name}"
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{ user: admin, password: admin }}
    {{ user: feeder, password: feeder, permissions: {{ {deny} }} }}
  ]
}}
"""


@contextlib.asynccontextmanager
async def _server(tmp: Path) -> AsyncIterator[tuple[int, Path, asyncio.subprocess.Process]]:
    """A nats-server with JetStream whose user ``feeder`` may not delete from HOLD (yet)."""
    port = free_port()
    conf = tmp / "nats.conf"
    conf.write_text(_config(port, tmp / "js", NAME, deny_delete=True))
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()),
        "-c",
        str(conf),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert await accepting(port), "nats-server did not start"
        yield port, conf, server
    finally:
        if server.returncode is None:
            server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def _connect(port: int, user: str) -> NATS:
    async def quiet(exc: Exception) -> None:  # (the refused deletes: expected here)
        pass

    return await nats.connect(
        f"nats://{user}:{user}@127.0.0.1:{port}", max_reconnect_attempts=1, error_cb=quiet
    )


@pytest.mark.timeout(90)
async def test_a_delete_that_got_no_answer_is_tried_again_and_the_caller_answered(
    tmp_path: Path,
) -> None:
    settings, _ = write_settings(tmp_path / "home")
    async with _server(tmp_path) as (port, conf, server):
        nc = await _connect(port, "admin")
        feeder_nc = await _connect(port, "feeder")
        feeder = Feeder(
            feeder_nc, Metrics("control"), RouteTable, heads=lambda: 1, latency=lambda _: None
        )
        answers: list[Msg] = []
        try:
            js = nc.jetstream()
            await js.add_stream(definitions.hold_stream_config(settings))
            await js.create_key_value(definitions.bucket_config(subjects.SCHED_BUCKET, settings))

            async def heard(msg: Msg) -> None:
                answers.append(msg)

            await nc.subscribe(REPLY, cb=heard)
            await flushed(nc)
            await feeder.start()
            await js.publish(
                f"{subjects.HOLD_PREFIX}.{DEP}.default.t",
                b"{}",
                headers={
                    h.REQUEST_ID: "r-retry",
                    h.REPLY: REPLY,
                    h.DEADLINE: str(int((time.time() - 1) * 1000)),
                    "Nats-Msg-Id": "r-retry",
                },
            )
            # Three deletes, each unanswered for 2 s, and then a purge half a second later:
            # the old feeder dropped it here without a word.
            await asyncio.sleep(8.5)
            assert not answers
            info = await js.stream_info(subjects.HOLD_STREAM)
            assert info.state.messages == 1  # still held: nobody answered it

            conf.write_text(_config(port, tmp_path / "js", NAME, deny_delete=False))
            server.send_signal(signal.SIGHUP)  # reload: the delete is allowed now
            await until(lambda: len(answers) >= 2, timeout=20)  # the 504 and its terminator
            await asyncio.sleep(1.5)  # (a second answer would come with the next tick)
            errors = [m for m in answers if m.data]
            assert len(errors) == 1
            body = msgspec.json.decode(errors[0].data)
            assert body["error"]["code"] == "deadline_exceeded", body
            info = await js.stream_info(subjects.HOLD_STREAM)
            assert info.state.messages == 0
        finally:
            await feeder.stop()
            await feeder_nc.close()
            await nc.close()


@pytest.mark.timeout(90)
async def test_an_unanswered_delete_stops_being_retried_once_moved_requests_pile_up_behind_it(
    tmp_path: Path,
) -> None:
    """Purges of a tenant subject stop below a request still waiting for its delete: what was
    moved after it stays in HOLD and counts against ``streams.hold_tenant_limit`` (429 with
    nothing waiting). Once a purge batch piles up behind it, its delete is given up."""
    settings, _ = write_settings(tmp_path / "home")
    async with _server(tmp_path) as (port, _conf, _server_process):
        nc = await _connect(port, "admin")
        feeder_nc = await _connect(port, "feeder")
        feeder = Feeder(
            feeder_nc, Metrics("control"), RouteTable, heads=lambda: 1, latency=lambda _: None
        )
        answers: list[Msg] = []
        try:
            js = nc.jetstream()
            await js.add_stream(definitions.hold_stream_config(settings))
            await js.add_stream(definitions.dispatch_stream_config(settings))
            await js.create_key_value(definitions.bucket_config(subjects.SCHED_BUCKET, settings))

            async def heard(msg: Msg) -> None:
                answers.append(msg)

            await nc.subscribe(REPLY, cb=heard)
            await flushed(nc)
            await feeder.start()
            subject = f"{subjects.HOLD_PREFIX}.{DEP}.default.t"
            expired = str(int((time.time() - 1) * 1000))
            await js.publish(
                subject,
                b"{}",
                headers={
                    h.REQUEST_ID: "r-old",
                    h.REPLY: REPLY,
                    h.DEADLINE: expired,
                    "Nats-Msg-Id": "r-old",
                },
            )
            behind = PURGE_BATCH + 6
            for n in range(behind):  # no deadline: each one is moved to dispatch
                await js.publish(
                    subject, b"{}", headers={h.REQUEST_ID: f"r{n}", "Nats-Msg-Id": f"r{n}"}
                )

            async def hold_empty() -> bool:
                info = await js.stream_info(subjects.HOLD_STREAM)
                return info.state.messages == 0

            started = time.monotonic()
            while not await hold_empty():
                # The first delete goes unanswered 3 times (6.6 s); the old feeder then kept
                # trying for 30 s while the moved requests stayed in HOLD.
                assert time.monotonic() - started < 15, "moved requests stuck in HOLD"
                await asyncio.sleep(0.5)
            dispatched = await js.stream_info(subjects.DISPATCH_STREAM)
            assert dispatched.state.messages == behind
            assert not answers  # given up: left to its caller's own timeout
        finally:
            await feeder.stop()
            await feeder_nc.close()
            await nc.close()


@pytest.mark.timeout(60)
async def test_a_delete_hold_answers_with_an_error_is_not_tried_again(tmp_path: Path) -> None:
    """A definite error (here: HOLD sealed) will not change in a second: the delete is given
    up at once, as before, rather than tried every tick for 30 s."""
    settings, _ = write_settings(tmp_path / "home")
    async with _server(tmp_path) as (port, conf, server):
        conf.write_text(_config(port, tmp_path / "js", NAME, deny_delete=False))
        server.send_signal(signal.SIGHUP)  # (the delete is allowed: HOLD itself refuses it)
        nc = await _connect(port, "admin")
        feeder_nc = await _connect(port, "feeder")
        feeder = Feeder(
            feeder_nc,
            Metrics("control"),
            RouteTable,
            heads=lambda: 1,
            latency=lambda _: None,
            queue_limit=0,  # nothing is moved: the request waits in HOLD until it expires
        )
        deletes: list[Msg] = []
        try:
            js = nc.jetstream()
            hold = definitions.hold_stream_config(settings)
            await js.add_stream(hold)
            await js.create_key_value(definitions.bucket_config(subjects.SCHED_BUCKET, settings))

            async def seen(msg: Msg) -> None:
                deletes.append(msg)

            await nc.subscribe(DELETE, cb=seen)
            await flushed(nc)
            await asyncio.sleep(0.5)  # (the reload)
            await feeder.start()
            await js.publish(
                f"{subjects.HOLD_PREFIX}.{DEP}.default.t",
                b"{}",
                headers={
                    h.REQUEST_ID: "r-sealed",
                    h.REPLY: REPLY,
                    h.DEADLINE: str(int((time.time() + 1.5) * 1000)),
                    "Nats-Msg-Id": "r-sealed",
                },
            )
            await asyncio.sleep(0.3)
            await js.update_stream(dataclasses.replace(hold, sealed=True))
            await until(lambda: len(deletes) >= 1, timeout=10)
            await asyncio.sleep(4)  # the old feeder tried again every tick
            assert len(deletes) == 1
        finally:
            await feeder.stop()
            await feeder_nc.close()
            await nc.close()
