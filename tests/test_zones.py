"""Zone isolation against a real nats-server running the rendered config.

The expected permissions below are written out independently of ``bus/permissions.py``: if the
rendered config grants more (or less) than this table, a test fails. Violations are asynchronous
in nats-py, so each check publishes or subscribes, flushes, and inspects ``error_cb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import pathlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DiscardPolicy

from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.bus.identities import SERVICE_IDENTITIES
from switchyard.runtime.definitions import ADMIN_SIGNIN_FAILURES_MAX_BYTES
from switchyard.schemas.keys import record_name
from switchyard.stack.binaries import nats_server
from switchyard.stack.certs import CertificateAuthority, init_certificates
from switchyard.stack.natsconf import NatsServerLayout, nats_config, render
from switchyard.stack.process import ManagedProcess, ProcessSpec, http_check
from switchyard.stack.provision import provision_client, provision_core
from tests.support import Violations, settle, write_settings

pytestmark = pytest.mark.integration

ORG = "Switchyard"
IDENTITIES = [
    ("tail", "client"),
    ("gateway", "client"),
    ("admin", "client"),
    ("head", "core"),
    ("modelproxy", "core"),
    ("secrets", "core"),
    ("accounting", "core"),
    ("provisioner", "core"),
    ("control", "core"),
    ("batch", "client"),
    ("app", "client"),  # an internal client (nats.internal_clients; INTERNAL, OU kept)
    ("probe", "client"),  # test-only: a CLIENT user with no permission limits
    ("inprobe", "client"),  # test-only: an INTERNAL user with no permission limits
]


@dataclass(frozen=True)
class Zone:
    servers: list[str]
    cert_dir: Path
    settings: object
    server: ManagedProcess  # the zone's nats-server (a test may restart it)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def zone(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Zone]:
    root = tmp_path_factory.mktemp("zones")
    settings, _ = write_settings(root, {"nats": {"internal_clients": ["app"]}})
    cert_dir = settings.certs_dir
    init_certificates(cert_dir, organization=ORG, validity_days=30, clients=IDENTITIES)
    layout = NatsServerLayout(
        port=settings.stack.nats_port,
        monitor_port=settings.stack.nats_monitor_port,
        store_dir=root / "js",
        cert_dir=cert_dir,
        organization=ORG,
        response_threshold_s=60,
        internal_clients=("app",),
    )
    doc = nats_config(layout)
    doc["accounts"]["CLIENT"]["users"].append({"user": f"CN=probe,OU=client,O={ORG}"})
    doc["accounts"]["INTERNAL"]["users"].append({"user": f"CN=inprobe,OU=client,O={ORG}"})
    conf = root / "nats.conf"
    conf.write_text(render(doc))
    health = f"http://127.0.0.1:{layout.monitor_port}/healthz"
    proc = ManagedProcess(
        ProcessSpec("nats-zones", [str(nats_server()), "-c", str(conf)], http_check(health)),
        root,
    )
    await proc.start()
    assert await proc.wait_healthy(30), proc.tail_log()
    servers = [f"tls://127.0.0.1:{layout.port}"]
    prov = await connect(servers, cert_dir, "provisioner")
    await provision_core(prov, settings)
    await prov.close()
    adm = await connect(servers, cert_dir, "admin")
    await provision_client(adm, settings)
    await adm.close()
    try:
        yield Zone(servers, cert_dir, settings, proc)
    finally:
        await proc.stop(5)


async def _as(zone: Zone, name: str) -> tuple[NATS, Violations]:
    violations = Violations()
    nc = await connect(zone.servers, zone.cert_dir, name, error_cb=violations)
    return nc, violations


async def _exported_request(
    nc: NATS, subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> Msg:
    """A request across accounts to a subscriber that has just subscribed and flushed.

    Twice in clean-clone CI (stops 23 and 24, on a slow VM, 1 run in ~700 tests each) such a
    request got "no responders" although the subscriber's flush had returned; 8 of 8 local runs
    pass. Retrying cannot make a refused export pass: only a subscriber that got the request
    can answer it (a permission refusal is a violation and a timeout; a subject that is not
    exported stays "no responders" and fails after the 2 s). So "no responders" is retried for
    up to 2 s, as ``LLMClient`` retries it in production, and anything else fails at once.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 2
    while True:
        try:
            return await nc.request(subject, payload, timeout=2, headers=headers)
        except NoRespondersError:
            if loop.time() >= give_up:
                raise
            await asyncio.sleep(0.05)


# ---- the table: (identity, subjects it may publish, may not publish, may/may not subscribe) ----

SECRET_GET = "secrets.v1.get.openai"
SECRET_ADMIN = "secrets.v1.admin.list"
CONTROL_ADMIN = "control.v1.admin.routes.put"
DISPATCH = "llm.v1.dispatch.demo--demo"
AUDIT = "audit.v1.key.create"

TABLE: dict[str, dict[str, list[str]]] = {
    "tail": {
        "pub_ok": [
            "llm.v1.chat",
            "llm.v1.complete",
            "llm.v1.embed",
            "llm.v1.models",
            "$JS.API.DIRECT.GET.OBJ_sy_files",  # downloads, a chunk at a time
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            DISPATCH,
            "llm.v1.usage",
            "llm.v1.reroute",
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.DELETE.KV_sy_keys",
            "$KV.sy_keys.anykey",
            "$KV.sy_admin_idempotency.c.x",  # the admin identity's alone
            "_R_.abc.def",
            "_INBOX_gateway.x",
            "llm.v1.hold.x.default.t",
            "$KV.sy_batch_lines.b.1",
            "$JS.API.STREAM.PURGE.KV_sy_batches",  # only the batch runner sweeps
            "$JS.API.CONSUMER.MSG.NEXT.KV_sy_batch_lines.reader",  # only the runner reads them
            "$JS.API.CONSUMER.CREATE.CANCELS.x",  # stored cancels are CORE's
            "$KV.sy_admin_sessions.s.x",  # the web app's sessions are the admin connection's
            "$JS.API.CONSUMER.CREATE.KV_sy_admin_sessions",
            "$KV.sy_admin_signin_failures.a.x",  # and so are the wrong-token counts
            "secrets.v1.changed.openai",
            CONTROL_ADMIN,
            "$KV.sy_routes.table",
            AUDIT,
        ],
        "sub_ok": ["_INBOX_tail.>"],
        "sub_no": [
            ">",
            "_INBOX.>",
            "_INBOX_gateway.>",
            "_INBOX_admin.>",
            "llm.v1.chat",
            "$KV.sy_keys.>",
        ],
    },
    "gateway": {
        "pub_ok": ["llm.v1.chat", "llm.v1.models"],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            CONTROL_ADMIN,
            DISPATCH,
            "$JS.API.STREAM.LIST",
            "$KV.sy_keys.anykey",
            AUDIT,
            "$JS.API.CONSUMER.MSG.NEXT.KV_sy_batch_lines.reader",  # only the runner reads them
            # The web app's sessions: written and followed on the admin connection only.
            "$KV.sy_admin_sessions.s.x",
            "$JS.API.CONSUMER.CREATE.KV_sy_admin_sessions",
            "$JS.API.DIRECT.GET.KV_sy_admin_sessions.$KV.sy_admin_sessions.s.x",
            "$KV.sy_admin_signin_failures.a.x",
            "$JS.API.CONSUMER.CREATE.KV_sy_admin_signin_failures",
        ],
        "sub_ok": ["_INBOX_gateway.>"],
        "sub_no": [">", "_INBOX_tail.>", "secrets.v1.changed.>"],
    },
    "admin": {
        "pub_ok": [
            "$KV.sy_key_spent.key_x",  # the budget watch's spent marks, into CORE's bucket
            # ...and one read by name (imported), before it deletes a mark it did not write
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",
            SECRET_ADMIN,
            "secrets.v1.admin.put",
            "$KV.sy_keys.anykey",
            "$KV.sy_admin_idempotency.c.x",  # Idempotency-Key answers (POST /admin/v1/keys)
            CONTROL_ADMIN,
            AUDIT,
            "$JS.API.STREAM.INFO.AUDIT",
            "$JS.API.CONSUMER.CREATE.AUDIT",
            # The web app's sessions, shared by every gateway replica: written, followed,
            # one read by name, and the bucket provisioned.
            "$KV.sy_admin_sessions.s.x",
            "$KV.sy_admin_sessions.cut.admin",
            "$JS.API.CONSUMER.CREATE.KV_sy_admin_sessions",
            "$JS.API.DIRECT.GET.KV_sy_admin_sessions.$KV.sy_admin_sessions.s.x",
            "$JS.API.STREAM.CREATE.KV_sy_admin_sessions",
            # The sign-in guard's wrong tokens per address: written, followed, and the bucket
            # provisioned (made, and capped to drop its oldest entries).
            "$KV.sy_admin_signin_failures.a.x",
            "$JS.API.CONSUMER.CREATE.KV_sy_admin_signin_failures",
            "$JS.API.STREAM.CREATE.KV_sy_admin_signin_failures",
            "$JS.API.STREAM.UPDATE.KV_sy_admin_signin_failures",
        ],
        "pub_no": [
            SECRET_GET,
            "llm.v1.chat",
            DISPATCH,
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.DELETE.KV_sy_keys",
            "_R_.abc.def",
            "$JS.API.STREAM.DELETE.AUDIT",
            "$JS.API.STREAM.PURGE.AUDIT",
            "$JS.API.STREAM.UPDATE.AUDIT",
            "$JS.API.STREAM.MSG.DELETE.AUDIT",
            "$JS.API.DIRECT.GET.OBJ_sy_files",  # the admin app reads no file's bytes
            # No batch or file record (a write is also a delete, a purge, a rollup of the
            # bucket): an admin's cancel is written by the gateway's connection.
            "$KV.sy_batches.b.x",
            "$KV.sy_batches.f.x",
            "$KV.sy_batch_lines.b.1",  # nor a line's result
            # Nor may it delete or purge the sessions' bucket (only expire entries by TTL).
            "$JS.API.STREAM.DELETE.KV_sy_admin_sessions",
            "$JS.API.STREAM.PURGE.KV_sy_admin_sessions",
            "$JS.API.STREAM.DELETE.KV_sy_admin_signin_failures",
        ],
        "sub_ok": ["_INBOX_admin.>"],
        "sub_no": [">", "_INBOX_tail.>", "secrets.v1.admin.>", "audit.v1.>"],
    },
    "app": {
        "pub_ok": [
            "llm.v1.chat",
            "llm.v1.complete",
            "llm.v1.embed",
            "llm.v1.models",
            "llm.v1.responses",
            "llm.v1.messages",
            "llm.v1.count_tokens",
            "llm.v1.input_tokens",
            "llm.v1.cancel",
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            "$JS.API.DIRECT.GET.OBJ_sy_files",
            SECRET_GET,
            SECRET_ADMIN,
            CONTROL_ADMIN,
            "control.v1.admin.routes.get",
            "secrets.v1.changed.openai",
            "$KV.sy_keys.anykey",
            "$KV.sy_batches.b.x",
            "$KV.sy_batch_lines.b.1",
            "$O.sy_files.C.x",
            "$KV.sy_admin_sessions.s.x",
            "$KV.sy_admin_signin_failures.a.x",
            "$JS.API.STREAM.LIST",
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.AUDIT",
            "$JS.API.CONSUMER.CREATE.KV_sy_keys",
            DISPATCH,
            AUDIT,
            "audit.v1.test.x",
            "_R_.abc.def",
            "stats.v1.process.app.x",
        ],
        "sub_ok": ["_INBOX_app.>"],
        "sub_no": [">", "_INBOX_tail.>", "audit.v1.>", "$KV.>", "llm.v1.chat"],
    },
    "head": {
        "pub_ok": [
            DISPATCH,
            "llm.v1.hold.x.default.t",
            "$JS.API.STREAM.INFO.DISPATCH",
            "$KV.sy_health.x",
            "sy.clientkv.DIRECT.GET.KV_sy_keys.$KV.sy_keys.k.x",
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            "$JS.API.STREAM.DELETE.DISPATCH",
            "$JS.API.STREAM.CREATE.EVIL",
            "$JS.API.CONSUMER.CREATE.DISPATCH.x",
            "$KV.sy_routes.table",
            "llm.v1.usage",
            "secrets.v1.changed.openai",
            CONTROL_ADMIN,
            "$KV.sy_keys.k.forged",
            "$KV.sy_sched.dep.x",
            "$KV.sy_response_items.tx.msg_x",  # only model-proxies keep response items
            "$JS.API.DIRECT.GET.KV_sy_response_items.$KV.sy_response_items.tx.msg_x",
            "$JS.API.STREAM.MSG.DELETE.HOLD",
            "$JS.API.STREAM.PURGE.HOLD",
            "$JS.API.CONSUMER.CREATE.CANCELS.x",  # only model-proxies read stored cancels
        ],
        "sub_ok": ["llm.v1.chat", "llm.v1.reroute", "_INBOX_head.>", "$KV.sy_keys.>"],
        "sub_no": [">", "secrets.v1.get.>", "llm.v1.dispatch.>", "_INBOX_modelproxy.>"],
    },
    "modelproxy": {
        "pub_ok": [
            SECRET_GET,
            "$JS.ACK.DISPATCH.x.y",
            "llm.v1.usage",
            "_R_.abc.def",
            "llm.v1.reroute",
            # The cancels stored while it was not running, read with a consumer of its own.
            "$JS.API.STREAM.INFO.CANCELS",
            "$JS.API.CONSUMER.CREATE.CANCELS.x",
            "$JS.API.CONSUMER.MSG.NEXT.CANCELS.x",
            "$JS.API.CONSUMER.DELETE.CANCELS.x",
            # Who created each native Responses answer: read and written.
            "$KV.sy_response_owners.resp_x",
            "$JS.API.DIRECT.GET.KV_sy_response_owners.$KV.sy_response_owners.resp_x",
            # Translated Responses answers' items: written, and read for item references.
            "$KV.sy_response_items.tx.msg_x",
            "$JS.API.DIRECT.GET.KV_sy_response_items.$KV.sy_response_items.tx.msg_x",
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_ADMIN,
            "secrets.v1.admin.put",
            "$JS.API.STREAM.PURGE.KV_sy_response_owners",
            "$JS.API.STREAM.DELETE.KV_sy_response_owners",
            "$JS.API.STREAM.PURGE.KV_sy_response_items",
            "$JS.API.STREAM.UPDATE.KV_sy_response_items",
            "$JS.API.STREAM.DELETE.KV_sy_response_items",
            DISPATCH,
            "$JS.API.STREAM.DELETE.DISPATCH",
            "$JS.API.CONSUMER.CREATE.DISPATCH.x",
            "llm.v1.cancel",  # it hears cancels, never sends or stores one
            "$JS.API.STREAM.PURGE.CANCELS",
            "$JS.API.STREAM.MSG.DELETE.CANCELS",
            "$JS.API.STREAM.UPDATE.CANCELS",
            "$JS.API.STREAM.DELETE.CANCELS",
            "$JS.API.CONSUMER.CREATE.CANCELS.x.llm.v1.cancel",  # a filtered (durable) one
            "$JS.API.CONSUMER.MSG.NEXT.USAGE.x",
            "$KV.sy_routes.table",
            "secrets.v1.changed.openai",
            "sy.clientkv.DIRECT.GET.KV_sy_keys.$KV.sy_keys.k.x",
        ],
        "sub_ok": [
            "_INBOX_modelproxy.>",
            "secrets.v1.changed.>",
            "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.DISPATCH.dep-x",
        ],
        "sub_no": [">", "secrets.v1.get.>", "llm.v1.chat", "llm.v1.dispatch.>", "$KV.sy_keys.>"],
    },
    "secrets": {
        "pub_ok": ["secrets.v1.changed.openai"],
        "pub_no": [
            "$KV.sy_key_spent.key_x",
            DISPATCH,
            "$JS.API.STREAM.LIST",
            "llm.v1.usage",
            "_R_.abc.def",
            "llm.v1.chat",
        ],
        "sub_ok": ["secrets.v1.get.>", "secrets.v1.admin.>"],
        "sub_no": [">", "llm.v1.chat", "llm.v1.dispatch.>"],
    },
    "accounting": {
        "pub_ok": ["$JS.ACK.USAGE.x.y", "$JS.API.STREAM.INFO.USAGE"],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            DISPATCH,
            "$JS.API.STREAM.DELETE.USAGE",
            "llm.v1.usage",
        ],
        "sub_ok": [
            "_INBOX_accounting.>",
            "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.USAGE.accounting",
        ],
        "sub_no": [
            ">",
            "llm.v1.usage",
            "secrets.v1.changed.>",
            "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.DISPATCH.dep-x",
        ],
    },
    "control": {
        "pub_ok": [
            "$KV.sy_routes.table",
            "$KV.sy_health.cd.x",
            "$KV.sy_sched.dep.x",
            "$JS.API.CONSUMER.CREATE.DISPATCH.dep-x.llm.v1.dispatch.x",
            "$JS.API.CONSUMER.INFO.DISPATCH.dep-x",
            DISPATCH,  # the feeder moves held requests into dispatch
            "$JS.API.STREAM.PURGE.HOLD",
            # A request whose deadline passed while held: deleted from HOLD first (no more
            # than the purge allows), so only one feeder answers it.
            "$JS.API.STREAM.MSG.DELETE.HOLD",
            # The 504 of a request whose deadline passed while held (its caller's reply
            # mapping): no more than moving it into dispatch let it make a model-proxy send.
            "_R_.abc.def",
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            "llm.v1.hold.x.default.t",
            "$JS.API.STREAM.MSG.DELETE.DISPATCH",
            "$JS.API.STREAM.PURGE.DISPATCH",
            "$JS.API.STREAM.DELETE.HOLD",
            "$JS.API.STREAM.DELETE.DISPATCH",
            "$JS.API.CONSUMER.DELETE.DISPATCH.dep-x",
            "$JS.API.STREAM.CREATE.EVIL",
            "llm.v1.usage",
        ],
        "sub_ok": [
            "control.v1.admin.>",
            "_INBOX_control.>",
            "$JS.ACK.DISPATCH.>",
            "secrets.v1.changed.*",  # a stored key ends its deployments' cooldowns
        ],
        "sub_no": [">", "llm.v1.chat", "secrets.v1.get.>", "llm.v1.dispatch.>"],
    },
    "batch": {
        "pub_ok": [
            "llm.v1.chat",
            "llm.v1.embed",
            "llm.v1.cancel",  # lines in flight when it stops
            "$O.sy_files.C.x",
            "$KV.sy_batches.b.x",
            "$KV.sy_batch_lines.b.1",
            "$JS.API.STREAM.PURGE.KV_sy_batches",
            "$JS.API.CONSUMER.MSG.NEXT.KV_sy_batch_lines.reader",  # pages of line results
            "$JS.API.DIRECT.GET.OBJ_sy_files",  # input files a chunk at a time
            "$JS.API.DIRECT.GET.KV_sy_keys.$KV.sy_keys.k.abc",  # a batch key's budget
        ],
        "pub_no": [
            "$KV.sy_key_spent.key_x",  # only the gateway's budget watch (admin) marks keys
            "sy.spentkv.DIRECT.GET.KV_sy_key_spent.$KV.sy_key_spent.key_x",  # nor reads one
            SECRET_GET,
            SECRET_ADMIN,
            CONTROL_ADMIN,
            DISPATCH,
            "$JS.API.CONSUMER.MSG.NEXT.KV_sy_batches.reader",
            "$JS.API.CONSUMER.MSG.NEXT.DISPATCH.reader",
            "$KV.sy_keys.anykey",
            "$JS.API.DIRECT.GET.KV_sy_keys",  # keys by sequence: a listing
            "$JS.API.CONSUMER.CREATE.KV_sy_keys",  # nor a watch of the bucket
            "$JS.API.STREAM.DELETE.OBJ_sy_files",
            "$JS.API.STREAM.DELETE.KV_sy_batches",
            "llm.v1.models",
        ],
        "sub_ok": ["_INBOX_batch.>"],
        "sub_no": [">", "_INBOX_tail.>", "llm.v1.chat"],
    },
    "provisioner": {
        "pub_ok": ["$JS.API.STREAM.LIST", "$KV.sy_routes.table"],
        "pub_no": ["$KV.sy_key_spent.key_x", SECRET_GET, SECRET_ADMIN, "llm.v1.chat", DISPATCH],
        "sub_ok": ["_INBOX_provisioner.>"],
        "sub_no": [">", "secrets.v1.get.>", "llm.v1.chat"],
    },
}


@pytest.mark.parametrize("identity", sorted(TABLE))
async def test_publish_permissions(zone: Zone, identity: str) -> None:
    nc, violations = await _as(zone, identity)
    try:
        for subject in TABLE[identity]["pub_no"]:
            await nc.publish(subject, b"{}")
        for subject in TABLE[identity]["pub_ok"]:
            # allowed publishes to request subjects get a reply inbox that exists
            await nc.publish(subject, b"{}")
        await settle(nc, 0.3)
        refused = [s for s in TABLE[identity]["pub_no"] if not violations.about(s)]
        wrongly_refused = [s for s in TABLE[identity]["pub_ok"] if violations.about(s)]
        assert refused == [], f"{identity} could publish to {refused}"
        assert wrongly_refused == [], f"{identity} was refused {wrongly_refused}"
    finally:
        await nc.close()


@pytest.mark.parametrize("identity", sorted(TABLE))
async def test_subscribe_permissions(zone: Zone, identity: str) -> None:
    nc, violations = await _as(zone, identity)
    try:
        for subject in TABLE[identity]["sub_no"] + TABLE[identity]["sub_ok"]:
            await nc.subscribe(subject)
        await settle(nc, 0.3)
        allowed = [s for s in TABLE[identity]["sub_no"] if not violations.about(s)]
        wrongly_refused = [s for s in TABLE[identity]["sub_ok"] if violations.about(s)]
        assert allowed == [], f"{identity} could subscribe to {allowed}"
        assert wrongly_refused == [], f"{identity} was refused {wrongly_refused}"
    finally:
        await nc.close()


def test_table_covers_every_identity() -> None:
    assert {i.name for i in SERVICE_IDENTITIES} <= set(TABLE)


# ---- connections that must be refused ----


def _tls(cert: Path, key: Path | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _try_connect(zone: Zone, ctx: ssl.SSLContext) -> Exception | None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = NATS()
    try:
        await nc.connect(
            zone.servers,
            tls=ctx,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=on_error,
        )
    except Exception as exc:
        failure: Exception | None = exc
    else:
        failure = None
    # A refused first connect (allow_reconnect=False) leaves nats-py's transport open;
    # closing the client releases it, so no "unclosed stream" warning surfaces later.
    with contextlib.suppress(Exception):
        await nc.close()
    return failure


async def _refused(zone: Zone, ctx: ssl.SSLContext, logs: str) -> tuple[Exception | None, str]:
    """Try to connect; return the client's error and what the server logged meanwhile, once
    that says ``logs`` (or after 10 s): the server logs a refusal as it closes the
    connection, after the client saw it close, a moment a loaded machine stretches past any
    fixed wait."""
    log = zone.server.log_path
    offset = log.stat().st_size
    failure = await _try_connect(zone, ctx)
    deadline = time.monotonic() + 10
    while True:
        with log.open("rb") as f:
            f.seek(offset)
            logged = f.read().decode("utf-8", "replace")
        if logs in logged or time.monotonic() > deadline:
            return failure, logged
        await asyncio.sleep(0.05)


async def test_connection_without_certificate_is_refused(zone: Zone) -> None:
    ca = zone.cert_dir / "ca.pem"
    logs = "TLS handshake error: tls: client didn't provide a certificate"
    err, logged = await _refused(zone, _tls(ca, None, ca), logs)
    assert isinstance(err, ConnectionResetError | BrokenPipeError | ssl.SSLError), repr(err)
    assert logs in logged


async def test_certificate_from_another_ca_is_refused(zone: Zone, tmp_path: Path) -> None:
    rogue = tmp_path / "rogue"
    ca, _ = CertificateAuthority.load_or_create(rogue, ORG, 30)
    # Same DN as the real tail identity, signed by a CA the server does not trust.
    ca.issue(rogue, "tail", cn="tail", ou="client", organization=ORG, validity_days=30)
    ctx = _tls(rogue / "tail.pem", rogue / "tail-key.pem", zone.cert_dir / "ca.pem")
    logs = "x509: certificate signed by unknown authority"
    err, logged = await _refused(zone, ctx, logs)
    assert isinstance(err, ConnectionResetError | BrokenPipeError | ssl.SSLError), repr(err)
    assert logs in logged
    assert "CN=tail,OU=client" in logged


async def test_unmapped_identity_is_refused(zone: Zone) -> None:
    ca, _ = CertificateAuthority.load_or_create(zone.cert_dir, ORG, 30)
    ca.issue(
        zone.cert_dir, "intruder", cn="intruder", ou="client", organization=ORG, validity_days=30
    )
    ctx = _tls(
        zone.cert_dir / "intruder.pem", zone.cert_dir / "intruder-key.pem", zone.cert_dir / "ca.pem"
    )
    err, logged = await _refused(zone, ctx, "authentication error")
    assert isinstance(err, nats.errors.Error), repr(err)
    assert "authorization violation" in str(err).lower()
    assert "authentication error" in logged


async def test_server_certificate_cannot_log_in_as_a_client(zone: Zone) -> None:
    ctx = _tls(
        zone.cert_dir / "server.pem", zone.cert_dir / "server-key.pem", zone.cert_dir / "ca.pem"
    )
    logs = "x509: certificate specifies an incompatible key usage"
    err, logged = await _refused(zone, ctx, logs)
    assert isinstance(err, ConnectionResetError | BrokenPipeError | ssl.SSLError), repr(err)
    assert logs in logged


# ---- what crosses zones, and what does not ----


async def test_exported_llm_api_reaches_core_with_the_callers_identity(zone: Zone) -> None:
    head, _ = await _as(zone, "head")
    tail, tail_errors = await _as(zone, "tail")
    seen: list[dict[str, str]] = []

    async def answer(msg: Msg) -> None:
        seen.append(dict(msg.headers or {}))
        await head.publish(msg.reply, b'{"ok":true}')

    await head.subscribe("llm.v1.chat", queue="head", cb=answer)
    await head.flush()
    try:
        reply = await _exported_request(tail, "llm.v1.chat", b"{}")
        assert reply.data == b'{"ok":true}'
        info = json.loads(seen[0]["Nats-Request-Info"])
        assert info["acc"] == "CLIENT"
        assert info["user"] == f"CN=tail,OU=client,O={ORG}"  # share: true, unforgeable
        assert tail_errors.errors == []
    finally:
        await head.close()
        await tail.close()


async def test_forged_request_info_is_overwritten(zone: Zone) -> None:
    head, _ = await _as(zone, "head")
    app, _ = await _as(zone, "app")
    seen: list[str] = []

    async def answer(msg: Msg) -> None:
        seen.append((msg.headers or {}).get("Nats-Request-Info", ""))
        await head.publish(msg.reply, b"ok")

    await head.subscribe("llm.v1.chat", cb=answer)
    await head.flush()
    try:
        forged = json.dumps({"acc": "CLIENT", "user": f"CN=tail,OU=client,O={ORG}"})
        await _exported_request(app, "llm.v1.chat", b"{}", {"Nats-Request-Info": forged})
        info = json.loads(seen[0])
        # The internal client's own account, and the DN its certificate always had.
        assert (info["acc"], info["user"]) == ("INTERNAL", f"CN=app,OU=client,O={ORG}")
    finally:
        await head.close()
        await app.close()


async def test_secrets_admin_is_exported_to_admin_only(zone: Zone) -> None:
    secrets_nc, _ = await _as(zone, "secrets")
    admin, _ = await _as(zone, "admin")

    async def answer(msg: Msg) -> None:
        await secrets_nc.publish(msg.reply, b"meta")

    await secrets_nc.subscribe("secrets.v1.admin.>", queue="secrets", cb=answer)
    await secrets_nc.flush()
    try:
        reply = await _exported_request(admin, SECRET_ADMIN, b"{}")
        assert reply.data == b"meta"
    finally:
        await secrets_nc.close()
        await admin.close()


async def test_client_zone_cannot_reach_unexported_core_subjects(zone: Zone) -> None:
    """Even a CLIENT user without permission limits cannot reach secrets.get or dispatch."""
    secrets_nc, _ = await _as(zone, "secrets")
    got: list[str] = []

    async def answer(msg: Msg) -> None:
        got.append(msg.subject)
        await secrets_nc.publish(msg.reply, b"sk-should-never-arrive")

    await secrets_nc.subscribe("secrets.v1.get.>", cb=answer)
    await secrets_nc.flush()
    probe, _ = await _as(zone, "probe")
    try:
        for subject in (
            SECRET_GET,
            DISPATCH,
            "llm.v1.usage",
            "llm.v1.reroute",
            "secrets.v1.changed.x",
        ):
            with pytest.raises((NoRespondersError, NatsTimeout)):
                await probe.request(subject, b"{}", timeout=0.5)
        assert got == []
    finally:
        await probe.close()
        await secrets_nc.close()


async def test_core_reads_client_keys_but_cannot_change_them(zone: Zone) -> None:
    """The head sees key records (for its re-check) through a read-only, remapped import."""
    admin, _ = await _as(zone, "admin")
    head, head_errors = await _as(zone, "head")
    try:
        kv = await admin.jetstream().key_value("sy_keys")
        await kv.put("k.zone-test", b'{"probe": 1}')
        got = await head.request(
            "sy.clientkv.DIRECT.GET.KV_sy_keys.$KV.sy_keys.k.zone-test", b"", timeout=2
        )
        assert got.data == b'{"probe": 1}'
        await head.publish("$KV.sy_keys.k.zone-test", b"forged")
        await settle(head, 0.3)
        assert head_errors.about("$KV.sy_keys.k.zone-test")
        assert (await kv.get("k.zone-test")).value == b'{"probe": 1}'
    finally:
        await admin.close()
        await head.close()


async def test_only_admin_writes_spent_marks_and_heads_read_them(zone: Zone) -> None:
    """The gateway's budget watch (as admin, in CLIENT) writes spent marks into CORE's bucket
    through an import, and reads one by name through another; heads read them; no other
    identity can write one (nor read one: the publish table)."""
    admin, _ = await _as(zone, "admin")
    head, head_errors = await _as(zone, "head")
    tail, tail_errors = await _as(zone, "tail")
    app, app_errors = await _as(zone, "app")
    try:
        subject = "$KV.sy_key_spent.key_zone"
        ack = await admin.jetstream(timeout=5).publish(subject, b'{"probe": 1}')
        assert ack.stream == "KV_sy_key_spent"
        kv = await head.jetstream(timeout=5).key_value("sy_key_spent")
        assert (await kv.get("key_zone")).value == b'{"probe": 1}'
        # The admin reads one mark by name through its import (the sweep, before a delete).
        read = f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.{subject}"
        got = await admin.request(read, b"", timeout=2)
        assert got.data == b'{"probe": 1}'
        assert (got.headers or {}).get("Nats-Sequence") == str(ack.seq)
        for nc in (head, tail, app):
            await nc.publish(subject, b"forged")
        await settle(head, 0.3)
        assert head_errors.about(subject)
        assert tail_errors.about(subject)
        assert app_errors.about(subject)
        assert (await kv.get("key_zone")).value == b'{"probe": 1}'
    finally:
        for nc in (admin, head, tail, app):
            await nc.close()


async def test_client_zone_sees_only_its_own_jetstream(zone: Zone) -> None:
    probe, _ = await _as(zone, "probe")
    try:
        reply = await probe.request("$JS.API.STREAM.NAMES", b"{}", timeout=2)
        names = json.loads(reply.data).get("streams") or []
        assert "DISPATCH" not in names
        assert "USAGE" not in names
        assert "KV_sy_keys" in names  # CLIENT's own bucket
        info = json.loads(
            (await probe.request("$JS.API.STREAM.INFO.DISPATCH", b"", timeout=2)).data
        )
        assert info["error"]["code"] == 404
    finally:
        await probe.close()


async def test_client_wildcard_subscriber_sees_no_core_traffic(zone: Zone) -> None:
    probe, _ = await _as(zone, "probe")
    mp, _ = await _as(zone, "modelproxy")
    head, _ = await _as(zone, "head")
    sec, _ = await _as(zone, "secrets")
    seen: list[str] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg.subject)

    await probe.subscribe(">", cb=spy)
    await probe.flush()
    tail, _ = await _as(zone, "tail")
    try:
        # Positive control: CLIENT traffic does reach the spy, so silence below means something.
        await tail.publish("llm.v1.models", b"control")
        await tail.flush()
        await head.publish(DISPATCH, b"x")
        await mp.publish("llm.v1.usage", b"x")
        await mp.publish(SECRET_GET, b"x")
        await sec.publish("secrets.v1.changed.openai", b"x")
        for nc in (head, mp, sec):
            await nc.flush()
        # The control is waited for (a loaded machine may deliver it after any fixed wait);
        # then a moment more for anything published after it.
        deadline = time.monotonic() + 10
        while "llm.v1.models" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert "llm.v1.models" in seen, seen
        leaked = [s for s in seen if not s.startswith("$JS.") and s != "llm.v1.models"]
        assert leaked == []
    finally:
        for nc in (probe, mp, head, sec, tail):
            await nc.close()


def _monitor_port(zone: Zone) -> int:
    text = (zone.cert_dir.parent / "nats.conf").read_text()
    return int(text.split('http: "127.0.0.1:', 1)[1].split('"', 1)[0])


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from the kernel, not a config)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in f.read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


async def test_monitoring_port_listens_on_loopback_only(zone: Zone) -> None:
    """The monitoring port has no authentication: it must not be reachable off the host."""
    port = _monitor_port(zone)
    # 127.0.0.1 as the kernel writes it (little-endian hex); nothing on 0.0.0.0 or ::.
    assert _listening_addresses(port) == {"0100007F"}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert b"200" in (await reader.read(64))
    writer.close()
    others = [a for a in _host_addresses() if not a.startswith("127.")]
    for address in others:  # every other address of this machine is refused
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(address, port), 2)


def _host_addresses() -> list[str]:
    """Every IPv4 address of this machine, from the kernel's routing table."""
    lines = pathlib.Path("/proc/net/fib_trie").read_text(encoding="ascii").splitlines()
    found = {
        prev.split()[-1]
        for prev, line in itertools.pairwise(lines)
        if line.strip() == "/32 host LOCAL"
    }
    return sorted(found)


async def test_batch_reads_a_key_record_by_name(zone: Zone) -> None:
    """The batch runner checks its batch's key budget: it fetches that key's record by name,
    as :class:`~switchyard.workers.batch.budget.KeyRecords` asks for it.

    (A wildcard in the name's last token passes the same permission and returns the record
    written last: NATS permissions cannot tell a literal ``*`` from a pattern. Documented in
    docs/security.md; the record holds a key hash and limits, no secret.)
    """
    admin, _ = await _as(zone, "admin")
    batch, batch_errors = await _as(zone, "batch")
    try:
        kv = await admin.jetstream().key_value("sy_keys")
        await kv.put(record_name("batch-zone"), b'{"probe": 2}')
        got = await batch.request(
            f"$JS.API.DIRECT.GET.KV_sy_keys.$KV.sy_keys.{record_name('batch-zone')}", b"", timeout=2
        )
        assert got.data == b'{"probe": 2}'
        assert not batch_errors.errors
    finally:
        await admin.close()
        await batch.close()


async def test_admin_cannot_write_delete_or_roll_up_batch_records(zone: Zone) -> None:
    """The admin identity (every CLI operator's) reads batch records, never writes them: a
    publish right on a record's subject would also be a delete, a purge, and a
    ``Nats-Rollup: all`` that empties the bucket, file records included (the bucket allows
    rollups). An admin's cancel is written by the gateway's connection."""
    gateway, _ = await _as(zone, "gateway")
    admin, admin_errors = await _as(zone, "admin")
    try:
        kv = await gateway.jetstream().key_value("sy_batches")
        await kv.put("b.zonetest.batch_x", b'{"probe": "batch"}')
        await kv.put("f.zonetest.file-x", b'{"probe": "file"}')
        forged = {
            "b.zonetest.batch_x": {},  # a rewrite (another key_id, say)
            "b.zonetest.batch_y": {"KV-Operation": "DEL"},
            "b.zonetest.batch_z": {"KV-Operation": "PURGE", "Nats-Rollup": "sub"},
            "b.zonetest.all": {"KV-Operation": "PURGE", "Nats-Rollup": "all"},
        }
        for key, headers in forged.items():
            await admin.publish(f"$KV.sy_batches.{key}", b"forged", headers=headers or None)
        await settle(admin, 0.3)
        assert all(admin_errors.about(f"$KV.sy_batches.{key}") for key in forged)
        assert (await kv.get("b.zonetest.batch_x")).value == b'{"probe": "batch"}'
        assert (await kv.get("f.zonetest.file-x")).value == b'{"probe": "file"}'
        # ...which the admin identity still reads (the admin API's batch list).
        read = await admin.jetstream().key_value("sy_batches")
        assert (await read.get("b.zonetest.batch_x")).value == b'{"probe": "batch"}'
    finally:
        await admin.close()
        await gateway.close()


async def test_the_admin_identity_provisions_the_capped_wrong_token_bucket(zone: Zone) -> None:
    """Provisioned by the admin identity with the rendered permissions: the wrong-token
    bucket exists, expires entries with the guard's window and drops its oldest when full."""
    admin, _ = await _as(zone, "admin")
    try:
        info = await admin.jetstream().stream_info("KV_sy_admin_signin_failures")
        assert info.config.max_age == 300
        assert info.config.max_bytes == ADMIN_SIGNIN_FAILURES_MAX_BYTES
        assert info.config.discard == DiscardPolicy.OLD
    finally:
        await admin.close()
