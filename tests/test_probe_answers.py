"""Probes against a real nats-server: a model-proxy's probe round reads the answers already sent
before judging (:func:`switchyard.workers.modelproxy.probes._collect`), and a client whose answers
the server refuses says so once and answers on
(:class:`switchyard.bus.probe_answers.ProbeAnswers`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import DEVNULL

import nats
import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.part_acks import Unacknowledged, send_acked_parts
from switchyard.bus.parts import send_parts
from switchyard.bus.probe_answers import ProbeAnswers
from switchyard.client import LLMClient
from switchyard.errors import ApiError
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from switchyard.workers.modelproxy import probes
from tests.support import free_port, jetstream_server, until

pytestmark = pytest.mark.integration


async def test_answers_already_sent_at_the_deadline_are_not_taken_for_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answers are on their way when the wait ends (here it is zero: a process too busy to
    read its socket in time): they are read after one flush, not counted as misses."""
    monkeypatch.setattr(probes, "PROBE_WAIT_S", 0.0)
    async with jetstream_server(tmp_path) as (nc, _):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(f"{inbox}.*")
        await nc.flush()
        caller = await nats.connect(nc.connected_url.geturl())  # type: ignore[union-attr]
        try:
            await caller.publish(f"{inbox}.0", b"")
            await caller.publish(f"{inbox}.1", b"")
            await caller.flush()  # the server has them (on their way to ``nc``)
        finally:
            await caller.close()
        heard: dict[str, bool] = {}
        await probes._collect(nc, sub, heard, 2)
    assert heard == {f"{inbox}.0": True, f"{inbox}.1": True}


async def test_a_connection_refused_an_answer_says_so_once_and_answers_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NATS config without ``allow_responses`` refuses every probe answer: the client says so
    once, and answers on (stopping for good after one refusal left requests in flight taken
    for gone once the client was back on a server that takes its answers)."""
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nauthorization {{ users = [ {{ user: a, password: a,"
        ' permissions: { publish: { allow: ["ok.>"] }, subscribe: { allow: [">"] } } } ] }\n'
    )
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()), "-c", str(conf), stdout=DEVNULL, stderr=DEVNULL
    )
    errors: list[Exception] = []

    async def count(exc: Exception) -> None:
        errors.append(exc)

    try:
        await accepting(port)
        nc = await nats.connect(
            f"nats://a:a@127.0.0.1:{port}", error_cb=count, max_reconnect_attempts=1
        )
        try:
            llm = LLMClient(nc)
            for n in range(3):  # a probe every round, as a model-proxy sends them
                await llm.probes.answer(f"_R_.denied.{n}")
                await nc.flush()
                await until(lambda: len(errors) > n)  # noqa: B023
        finally:
            await nc.close()
    finally:
        server.terminate()
        await server.wait()
    assert len(errors) == 3  # every answer was sent
    assert llm.probes.refused
    said = [r for r in caplog.records if "refused an answer" in r.getMessage()]
    assert len(said) == 1


@contextlib.asynccontextmanager
async def _old_config(tmp_path: Path) -> AsyncIterator[int]:
    """A nats-server whose caller ``a`` may publish requests but has no ``allow_responses``
    (a config rendered before it), and whose ``b`` (a model-proxy) may do anything."""
    port = free_port()
    conf = tmp_path / "old.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nauthorization {{ users = [\n"
        ' { user: a, password: a, permissions: { publish: { allow: ["llm.>"] },'
        ' subscribe: { allow: [">"] } } },\n { user: b, password: b } ] }\n'
    )
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()), "-c", str(conf), stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        await accepting(port)
        yield port
    finally:
        server.terminate()
        await server.wait()


async def test_a_client_refused_its_part_acknowledgements_stops_announcing_them(
    tmp_path: Path,
) -> None:
    """Under a NATS config without ``allow_responses`` every acknowledgement of a part is
    refused, and the model-proxy stops the answer (caller_gone): the client, once it has
    seen a refusal, announces no more ``Sy-Parts-Ack``, so its next answers in parts come
    back-to-back, whole (it announced them on every request, each stopped, before)."""
    answer = bytes(range(256)) * 400  # 100 KB, in parts of 16 KiB
    came: list[Msg] = []
    async with _old_config(tmp_path) as port:
        proxy = await nats.connect(f"nats://b:b@127.0.0.1:{port}")
        nc = await nats.connect(f"nats://a:a@127.0.0.1:{port}", max_reconnect_attempts=1)

        async def serve(msg: Msg) -> None:  # a head and model-proxy in one
            came.append(msg)
            assert msg.reply
            await replies.send_accepted(proxy, msg.reply)
            if (msg.headers or {}).get(h.PARTS_ACK) == "1":
                try:
                    count = await send_acked_parts(
                        proxy, msg.reply, answer, 16 * 1024, "1.1", wait_s=0.5
                    )
                except Unacknowledged:
                    gone = ApiError("no acknowledgement", code="caller_gone", status=499)
                    await replies.send_error(proxy, msg.reply, gone)
                    return
            else:
                count = await send_parts(proxy, msg.reply, answer, 16 * 1024, "1.1")
            await replies.send_final(proxy, msg.reply, b"", chunks=count, delivery="1.1")

        tasks: list[asyncio.Task[None]] = []

        async def on_request(msg: Msg) -> None:
            tasks.append(asyncio.create_task(serve(msg)))

        await proxy.subscribe(subjects.CHAT, cb=on_request)
        await proxy.flush()
        llm = LLMClient(nc, max_answer_bytes=10**6, api_key="sk-sy-old")
        await llm.start()
        try:
            with pytest.raises(ApiError) as first:  # acknowledged, refused: stopped
                await llm.request(subjects.CHAT, b"{}")
            assert first.value.status == 499
            for _ in range(2):
                assert (await llm.request(subjects.CHAT, b"{}")).body == answer
        finally:
            await llm.close()
            await nc.close()
            await proxy.close()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert [(m.headers or {}).get(h.PARTS_ACK) for m in came] == ["1", None, None]
    assert llm.probes.refused


def _config(port: int, conf: Path, *, responses: bool) -> Path:
    """:func:`_old_config`'s, or (``responses``) one rendered again: ``a`` may answer
    requests (``allow_responses``)."""
    allowed = " allow_responses: true," if responses else ""
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nauthorization {{ users = [\n"
        ' { user: a, password: a, permissions: { publish: { allow: ["llm.>"] },'
        f'{allowed} subscribe: {{ allow: [">"] }} }} }},\n {{ user: b, password: b }} ] }}\n'
    )
    return conf


async def _serving(port: int, conf: Path, *, responses: bool) -> asyncio.subprocess.Process:
    """A nats-server on ``port`` with :func:`_config`'s config."""
    path = _config(port, conf, responses=responses)
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()), "-c", str(path), stdout=DEVNULL, stderr=DEVNULL
    )
    await accepting(port)
    return server


async def test_a_refusal_is_forgotten_after_a_reconnect_or_a_while(tmp_path: Path) -> None:
    """One refusal (a reconnect to a server not yet given the new config, in a rolling
    reload) turned part acknowledgements off for the life of the process. Now a reconnect
    (here: to a server with ``allow_responses``) has the client announce them again, and so
    does the passing of ``RETRY_S`` (a config reloaded in place reconnects nobody)."""
    answer = bytes(range(256)) * 400  # 100 KB, in parts of 16 KiB
    came: list[Msg] = []
    port = free_port()
    server = await _serving(port, tmp_path / "nats.conf", responses=False)
    options = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
    try:
        proxy = await nats.connect(f"nats://b:b@127.0.0.1:{port}", **options)
        nc = await nats.connect(f"nats://a:a@127.0.0.1:{port}", **options)

        async def serve(msg: Msg) -> None:
            came.append(msg)
            assert msg.reply
            await replies.send_accepted(proxy, msg.reply)
            try:
                count = await send_acked_parts(
                    proxy, msg.reply, answer, 16 * 1024, "1.1", wait_s=0.5
                )
            except Unacknowledged:
                gone = ApiError("no acknowledgement", code="caller_gone", status=499)
                await replies.send_error(proxy, msg.reply, gone)
                return
            await replies.send_final(proxy, msg.reply, b"", chunks=count, delivery="1.1")

        tasks: list[asyncio.Task[None]] = []

        async def on_request(msg: Msg) -> None:
            if (msg.headers or {}).get(h.PARTS_ACK) == "1":
                tasks.append(asyncio.create_task(serve(msg)))
            else:  # (back-to-back parts: not what this test is about)
                came.append(msg)
                await replies.send_error(proxy, msg.reply or "", ApiError("no", status=500))

        await proxy.subscribe(subjects.CHAT, cb=on_request)
        await proxy.flush()
        llm = LLMClient(nc, max_answer_bytes=10**6, api_key="sk-sy-old")
        await llm.start()
        try:
            with pytest.raises(ApiError) as first:  # acknowledged, refused: stopped
                await llm.request(subjects.CHAT, b"{}")
            assert first.value.status == 499
            assert llm.probes.seen_refused()
            server.terminate()
            await server.wait()
            server = await _serving(port, tmp_path / "nats.conf", responses=True)
            await until(lambda: nc.is_connected and proxy.is_connected, timeout=10)
            await proxy.flush()
            assert (await llm.request(subjects.CHAT, b"{}")).body == answer  # acked again
            assert not llm.probes.refused
        finally:
            await llm.close()
            await nc.close()
            await proxy.close()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.terminate()
        await server.wait()
    assert [(m.headers or {}).get(h.PARTS_ACK) for m in came] == ["1", "1"]


async def test_a_refusal_is_tried_again_after_retry_s(tmp_path: Path) -> None:
    port = free_port()
    server = await _serving(port, tmp_path / "nats.conf", responses=False)
    try:
        nc = await nats.connect(f"nats://a:a@127.0.0.1:{port}", max_reconnect_attempts=1)
        try:
            answers = ProbeAnswers(nc, retry_s=0.5)
            await answers.answer("_R_.denied.0")
            await nc.flush()
            await until(answers.seen_refused)
            await asyncio.sleep(0.6)
            assert not answers.seen_refused()  # the same refusal is not counted twice
            await answers.answer("_R_.denied.1")
            await nc.flush()
            await until(answers.seen_refused)  # refused again: off again
        finally:
            await nc.close()
    finally:
        server.terminate()
        await server.wait()


async def test_a_refusal_while_refused_is_not_counted_once_forgotten(tmp_path: Path) -> None:
    """Answers refused while a refusal is believed leave the connection's last error a newer
    one than the refusal counted. Before, once ``RETRY_S`` passed, that old refusal was
    counted as a new one at once (part acknowledgements stayed off another ``RETRY_S``,
    though nothing was refused since); now what is forgotten is every refusal seen so far."""
    port = free_port()
    server = await _serving(port, tmp_path / "nats.conf", responses=False)
    try:
        nc = await nats.connect(f"nats://a:a@127.0.0.1:{port}", max_reconnect_attempts=1)
        try:
            answers = ProbeAnswers(nc, retry_s=0.5)
            await answers.answer("_R_.denied.0")
            await nc.flush()
            await until(answers.seen_refused)
            counted = nc.last_error
            await answers.answer("_R_.denied.1")  # refused too, while believed refused
            await nc.flush()
            await until(lambda: nc.last_error is not counted)
            await asyncio.sleep(0.6)
            assert not answers.seen_refused()  # the refusal before was not a new one
            await answers.answer("_R_.denied.2")
            await nc.flush()
            await until(answers.seen_refused)  # a new one still counts
        finally:
            await nc.close()
    finally:
        server.terminate()
        await server.wait()
