"""This version's processes against the NATS config the last release (0.3.1) rendered.

docs/operations.md, "Upgrading": an operator provisions before starting any process of the new
version, and renders the NATS config again; until the render, what needs the new rights is said
in the logs and everything else works. The older config is this version's minus what 0.3.1 did
not grant (checked against a config rendered by 0.3.1's code): the rights on the `sy_key_spent`,
`sy_admin_sessions`, `sy_admin_signin_failures` and `sy_admin_idempotency` buckets, and the
feeder's delete from HOLD.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.errors import Error as NatsError

from switchyard.admin.budget_watch import BudgetWatch
from switchyard.admin.key_idempotency import LOOKUP_S, REFUSED_S, IdempotentCreates
from switchyard.admin.keys_cli import CLI
from switchyard.admin.spend import SpendReader
from switchyard.admin.spent_writer import SpentWriter
from switchyard.admin.ui.pages.keys import FORM
from switchyard.admin.ui.session_share import SessionShare
from switchyard.admin.ui.sessions import SessionStore
from switchyard.admin.ui.signin_guard import SigninGuard
from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.errors import ServiceUnavailable
from switchyard.limits.spent_marks import SpentMark
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import KEY_ENCODER, RECORD_PREFIX, ClientKey
from switchyard.stack.binaries import nats_server
from switchyard.stack.certs import init_certificates
from switchyard.stack.natsconf import NatsServerLayout, nats_config, render
from switchyard.stack.process import ManagedProcess, ProcessSpec, http_check
from switchyard.stack.provision import (
    _ensure_idempotency_bucket,
    _ensure_sessions_bucket,
    provision_client,
    provision_core,
)
from switchyard.workers.head.spent_keys import SpentKeys
from tests.support import jetstream_server, pause, until, valkey_server, write_settings

pytestmark = pytest.mark.integration

ORG = "Switchyard"
# What this version's config grants that 0.3.1's did not.
NEW_IN_THIS_VERSION = (
    subjects.KEY_SPENT_BUCKET,
    subjects.ADMIN_SESSIONS_BUCKET,
    subjects.ADMIN_IDEMPOTENCY_BUCKET,
    subjects.ADMIN_SIGNIN_FAILURES_BUCKET,
    "$JS.API.STREAM.MSG.DELETE.HOLD",
)


CLIENT_STREAMS = (
    f"OBJ_{subjects.FILES_BUCKET}",
    f"KV_{subjects.BATCHES_BUCKET}",
    f"KV_{subjects.ADMIN_SESSIONS_BUCKET}",
    f"KV_{subjects.ADMIN_IDEMPOTENCY_BUCKET}",
)


def _new(item: Any) -> bool:
    """A permitted subject, or an import or export, that names what is new."""
    if isinstance(item, dict) and ("service" in item or "stream" in item):
        item = json.dumps(item)
    return isinstance(item, str) and any(new in item for new in NEW_IN_THIS_VERSION)


def _older(node: Any) -> Any:
    """``node`` without any permission, import or export naming what is new."""
    if isinstance(node, dict):
        return {k: _older(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_older(item) for item in node if not _new(item)]
    return node


@dataclass
class Server:
    servers: list[str]
    settings: Settings
    conf: Path
    layout: NatsServerLayout
    proc: ManagedProcess

    async def render(self, *, older: bool) -> None:
        """(Re)start nats-server on this version's config, or on the older one."""
        doc = nats_config(self.layout)
        self.conf.write_text(render(_older(doc) if older else doc))
        await self.proc.stop(5)
        await self.proc.start()
        assert await self.proc.wait_healthy(30), self.proc.tail_log()


@pytest_asyncio.fixture(loop_scope="session")
async def older(tmp_path: Path) -> AsyncIterator[Server]:
    settings, _ = write_settings(tmp_path)
    init_certificates(
        settings.certs_dir,
        organization=ORG,
        validity_days=30,
        clients=[("provisioner", "core"), ("head", "core"), ("admin", "client")],
    )
    layout = NatsServerLayout(
        port=settings.stack.nats_port,
        monitor_port=settings.stack.nats_monitor_port,
        store_dir=tmp_path / "js",
        cert_dir=settings.certs_dir,
        organization=ORG,
        response_threshold_s=60,
    )
    conf = tmp_path / "nats.conf"
    conf.write_text(render(_older(nats_config(layout))))
    health = f"http://127.0.0.1:{layout.monitor_port}/healthz"
    proc = ManagedProcess(
        ProcessSpec("nats-older", [str(nats_server()), "-c", str(conf)], http_check(health)),
        tmp_path,
    )
    await proc.start()
    assert await proc.wait_healthy(30), proc.tail_log()
    try:
        yield Server([f"tls://127.0.0.1:{layout.port}"], settings, conf, layout, proc)
    finally:
        await proc.stop(5)


def test_the_older_config_lacks_what_is_new() -> None:
    layout = NatsServerLayout(
        port=1, monitor_port=2, store_dir=Path("/x"), cert_dir=Path("/c"), organization=ORG,
        response_threshold_s=60,
    )  # fmt: skip
    doc = nats_config(layout)
    text, older = json.dumps(doc), json.dumps(_older(doc))
    for new in NEW_IN_THIS_VERSION:
        assert new in text
        assert new not in older
    assert "$KV.sy_batches" in older  # the rest stays


async def _provision_core(server: Server) -> None:
    prov = await connect(server.servers, server.settings.certs_dir, "provisioner")
    try:
        await provision_core(prov, server.settings, timeout=2)
    finally:
        await prov.close()


async def _provision(server: Server) -> None:
    await _provision_core(server)
    adm = await connect(server.servers, server.settings.certs_dir, "admin")
    try:
        await provision_client(adm, server.settings, timeout=2)
    finally:
        await adm.close()


async def _streams(server: Server) -> set[str]:
    """CORE's streams (the provisioner's), and CLIENT's that the admin identity may ask about."""
    nc = await connect(server.servers, server.settings.certs_dir, "provisioner")
    try:
        made = {str(s.config.name) for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()
    nc = await connect(server.servers, server.settings.certs_dir, "admin")
    try:
        for stream in CLIENT_STREAMS:
            with contextlib.suppress(NatsError, TimeoutError):
                await nc.jetstream(timeout=2).stream_info(stream)
                made.add(stream)
    finally:
        await nc.close()
    return made


@pytest.mark.asyncio(loop_scope="session")
async def test_provisioning_before_the_render_says_what_it_could_not_make(
    older: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """It made the sy_admin_idempotency bucket before the files store and the sessions bucket,
    without the tolerance the sessions bucket has: under the older config `switchyard provision`
    ended in a traceback (nats: timeout), the rest of CLIENT unprovisioned."""
    with caplog.at_level(logging.WARNING, logger="switchyard"):
        await _provision(older)
    said = caplog.text
    assert f"KV bucket {subjects.ADMIN_IDEMPOTENCY_BUCKET} not created" in said
    assert f"KV bucket {subjects.ADMIN_SESSIONS_BUCKET}" in said
    assert "render the NATS config of this version" in said
    made = await _streams(older)
    assert f"KV_{subjects.KEY_SPENT_BUCKET}" in made  # CORE is the provisioner's: made
    assert f"OBJ_{subjects.FILES_BUCKET}" in made
    assert f"KV_{subjects.BATCHES_BUCKET}" in made

    # After the render, provisioning again makes both (what the docs tell the operator).
    await older.render(older=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchyard"):
        await _provision(older)
    assert "not created" not in caplog.text
    made = await _streams(older)
    assert f"KV_{subjects.ADMIN_IDEMPOTENCY_BUCKET}" in made
    assert f"KV_{subjects.ADMIN_SESSIONS_BUCKET}" in made


@pytest.mark.asyncio(loop_scope="session")
async def test_a_slow_server_is_no_refusal_its_timeout_is_raised_to_be_retried(
    tmp_path: Path,
) -> None:
    """Any timeout making the new buckets was taken for the older config's refusal: a loaded
    cluster slow to create a replicated stream got "skipped" (exit 5, "render the NATS
    config") where the caller retries a timeout (`up`, `deploy init`) until its deadline."""
    async with jetstream_server(tmp_path / "js") as (client, server):
        js = client.jetstream(timeout=0.5)
        await pause(server.pid)  # this version's rights (none checked): only slow
        try:
            with pytest.raises(TimeoutError):
                await _ensure_sessions_bucket(js, Settings())
            with pytest.raises(TimeoutError):
                await _ensure_idempotency_bucket(js, Settings())
        finally:
            os.kill(server.pid, signal.SIGCONT)
        js = client.jetstream(timeout=5)
        assert await _ensure_sessions_bucket(js, Settings()) == []  # the retry makes them
        assert await _ensure_idempotency_bucket(js, Settings()) == []
        await js.key_value(subjects.ADMIN_SESSIONS_BUCKET)
        await js.key_value(subjects.ADMIN_IDEMPOTENCY_BUCKET)


def _cli_provision(server: Server) -> subprocess.CompletedProcess[str]:
    config = server.conf.parent / "switchyard.yaml"  # (write_settings's, next to the config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "provision", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_the_provision_command_says_what_it_skipped_and_exits_5(older: Server) -> None:
    """`switchyard provision` exited 0 and printed "provisioned streams, consumers and KV
    buckets" when it had skipped buckets: an operator's automation could not tell."""
    done = _cli_provision(older)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "except 3 KV buckets" in done.stdout
    for bucket in (
        subjects.ADMIN_SESSIONS_BUCKET,
        subjects.ADMIN_SIGNIN_FAILURES_BUCKET,
        subjects.ADMIN_IDEMPOTENCY_BUCKET,
    ):
        assert f"not provisioned: KV bucket {bucket} (" in done.stderr
    assert "render the NATS config of this version" in done.stderr
    assert "provision again" in done.stderr

    await older.render(older=False)  # the documented step: then it is all made, exit 0
    done = _cli_provision(older)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "provisioned streams, consumers and KV buckets"
    assert "not provisioned" not in done.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_an_idempotent_create_under_the_older_config_says_why(older: Server) -> None:
    """It was the generic "the gateway's store did not answer; try again" 503 (a job that
    retries would retry for ever), logged as a bare TimeoutError."""
    nc = await connect(older.servers, older.settings.certs_dir, "admin")
    creates = IdempotentCreates(nc.jetstream(timeout=1), nc=nc)
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await creates.claim("job-1", "digest", _never_made)
        assert refused.value.code == "service_unavailable"
        said = str(refused.value)
        assert subjects.ADMIN_IDEMPOTENCY_BUCKET in said
        assert "Idempotency-Key header" in said
        assert "render the NATS config of this version, reload nats-server" in said
        assert "without the header" in said
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_web_form_and_the_cli_are_refused_quickly_in_their_own_words(
    older: Server,
) -> None:
    """The New key form and `keys create --idempotency-key` were told of "Idempotency-Key"
    and to "send the create without the header", and each create waited the JetStream
    timeout (10 s) before it: the refused lookup was not remembered. Now the lookup is
    bounded (2 s) and a refusal is answered at once for a while, in each caller's words."""
    nc = await connect(older.servers, older.settings.certs_dir, "admin")
    creates = IdempotentCreates(nc.jetstream(timeout=10), nc=nc)  # as the gateway's
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as refused:
            await creates.claim("ui-form x", "digest", _never_made, FORM)
        assert time.monotonic() - started < LOOKUP_S + 1.5
        said = str(refused.value)
        assert said.startswith("the New key form needs")
        assert "render the NATS config of this version, reload nats-server" in said
        # Told from a lookup NATS did not answer (an outage) by the server's permissions
        # violation: remembered REFUSED_S, not LOOKUP_S.
        assert "which the NATS config refuses the gateway" in said, said
        assert refused.value.retry_after == REFUSED_S
        assert "header" not in said
        assert "Idempotency-Key" not in said
        assert refused.value.retry_after
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as again:
            await creates.claim("cli x", "digest", _never_made, CLI)
        assert time.monotonic() - started < 0.5  # remembered: no second lookup
        said = str(again.value)
        assert said.startswith("--idempotency-key needs")
        assert "without --idempotency-key" in said
        assert "header" not in said
    finally:
        await nc.close()


async def _never_made(_key_id: str) -> bool:
    return False


@pytest.mark.asyncio(loop_scope="session")
async def test_a_head_starts_under_the_older_config_and_follows_the_marks_after_the_render(
    older: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A new head that may not read sy_key_spent raised (nats: timeout) and exited: with the
    supervisor restarting it, a crash loop until the NATS config was rendered again."""
    await _provision_core(older)  # CORE's buckets are the provisioner's: made under either
    nc = await connect(older.servers, older.settings.certs_dir, "head")
    spent = SpentKeys(nc.jetstream(timeout=2), retry_s=0.5)
    try:
        with caplog.at_level(logging.ERROR, logger="switchyard.head"):
            await spent.start()  # returns: the head serves on
        assert not spent.following
        assert f"cannot follow the {subjects.KEY_SPENT_BUCKET} bucket" in caplog.text

        await older.render(older=False)
        await until(lambda: spent.following, timeout=20)
    finally:
        await spent.stop()
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_gateway_under_the_older_config_waits_one_timeout_per_scan_not_one_per_key(
    older: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway's first budget scan is part of its start; under the older config each spent
    mark's write waited out the JetStream timeout (5 s in the gateway), one key after another:
    60 keys past their budget held the start past the Kubernetes startup probe's 300 s."""
    await _provision_core(older)
    nc = await connect(older.servers, older.settings.certs_dir, "admin")
    writer = SpentWriter(nc, timeout=1)
    marks = [
        SpentMark(
            key_id=f"key_{n:016x}", period="monthly", period_id="2026-12", spent=10**9, until=None
        )
        for n in range(6)
    ]
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
            await writer.sync(marks)
        took = time.monotonic() - began
        assert took < 2.5, f"one round took {took:.1f} s"
        assert writer.written == {}

        await older.render(older=False)  # written at the next scan, all of them
        await until(lambda: nc.is_connected, timeout=20)
        await writer.sync(marks)
        assert set(writer.written) == {m.key_id for m in marks}
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_gateway_under_the_older_config_starts_without_waiting_for_the_new_buckets(
    older: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """What the gateway's admin side waits for at its start, as the gateway does it (the
    JetStream timeouts it uses, 10 s and 5 s): the sessions bucket, then the sign-in guard's,
    each waited out its timeout in turn, then the first budget scan's write to sy_key_spent
    its own; a new gateway under the older config started about 25 s late. Now the buckets are
    followed at once, at most START_WAIT_S, and later in the background; the scan too."""
    await _provision(older)  # all that the older config lets it make
    async with valkey_server(older.settings):
        nc = await connect(older.servers, older.settings.certs_dir, "admin")
        js = nc.jetstream(timeout=10)  # the gateway's
        keys = await js.key_value(subjects.KEYS_BUCKET)
        budgeted = ClientKey(id="key_0000000000000001", hash="h1", name="k1", budget_usd=5.0)
        await keys.put(RECORD_PREFIX + budgeted.hash, KEY_ENCODER.encode(budgeted))
        store, guard = SessionStore(), SigninGuard()
        share = SessionShare(js, store, guard, retry_s=0.5)
        spend = SpendReader(older.settings)
        watch = BudgetWatch(nc, spend, Metrics("gateway"), 30)
        try:
            began = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="switchyard"):
                assert not await share.start()
                await watch.start()
            took = time.monotonic() - began
            assert took < 10, f"the start took {took:.1f} s"
            assert "sessions are this gateway replica's until the" in caplog.text
            sid, _ = await store.create("ada", "10.0.0.1")  # in memory, as before
            assert await store.get(sid) is not None

            # After the render (and the provisioning it lets make them) both buckets are
            # followed, with no restart of the gateway.
            await older.render(older=False)
            await until(lambda: nc.is_connected, timeout=20)
            await _provision(older)
            await until(lambda: store.shared and guard.shared is not None, timeout=30)
        finally:
            await watch.stop()
            await share.stop()
            await spend.close()
            await nc.close()
