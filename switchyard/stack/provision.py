"""Create streams, consumers and KV buckets: idempotent, and done by the provisioner only.

Workers bind to what exists and never create JetStream objects, so a worker's credentials cannot
delete or reshape a queue. Running this twice changes nothing; changed settings (a deployment's
concurrency, a stream limit) are applied in place without losing queued messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import NamedTuple, TextIO

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import subjects as s
from switchyard.config import Settings
from switchyard.runtime.definitions import (
    BUCKET_MAX_BYTES,
    ROUTE_TABLE_KEY,
    accounting_consumer_config,
    audit_stream_config,
    bucket_config,
    cancels_stream_config,
    dispatch_stream_config,
    files_store_config,
    hold_stream_config,
    load_route_table,
    response_items_stream_config,
    sync_dispatch_consumers,
    usage_stream_config,
)
from switchyard.schemas.routing import RouteTable

log = logging.getLogger("switchyard.provision")

# What to do about a bucket skipped (the admin identity may not make it under an older
# version's NATS config).
RENDER_AGAIN = (
    "render the NATS config of this version (`switchyard deploy setup`; on Kubernetes the "
    "switchyard-nats Secret), reload nats-server and provision again"
)


# The exit status of `switchyard provision` and `switchyard deploy init` when buckets were
# skipped: all else is provisioned, and automation can tell (it exited 0, saying
# "provisioned"). Not 1 (the provisioning failed) nor the CLI's 2-4.
INCOMPLETE = 5


class Skipped(NamedTuple):
    """A bucket the provisioning could not make (or check), and what that costs until it is."""

    bucket: str
    costs: str


async def _ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    name = str(config.name)
    try:
        await js.stream_info(name)
    except NotFoundError:
        for attempt in range(5):
            try:
                await js.add_stream(config)
                break
            except APIError as exc:  # fresh file stores sometimes need a second try
                if attempt == 4:
                    raise
                log.debug("retrying creation of stream %s: %s", name, exc)
                await asyncio.sleep(0.5)
        log.info("created stream %s", name)
        return
    await js.update_stream(config)


async def provision_core(nc: NATS, settings: Settings, *, timeout: float = 10.0) -> RouteTable:
    """Provision CORE (connected as the provisioner). Returns the live route table.

    The route table is seeded from settings only when the bucket holds none, so changes made
    at run time survive restarts.
    """
    js = nc.jetstream(timeout=timeout)
    await _ensure_stream(js, dispatch_stream_config(settings))
    await _ensure_stream(js, usage_stream_config(settings))
    await _ensure_stream(js, hold_stream_config(settings))
    await _ensure_stream(js, cancels_stream_config(settings))
    await js.add_consumer(s.USAGE_STREAM, accounting_consumer_config())
    routes = await _ensure_kv(js, s.ROUTES_BUCKET, settings)
    await _ensure_kv(js, s.HEALTH_BUCKET, settings)
    await _ensure_kv(js, s.SCHED_BUCKET, settings)
    await _ensure_kv(js, s.KEY_SPENT_BUCKET, settings)
    await _ensure_kv(js, s.RESPONSE_OWNERS_BUCKET, settings)
    # A bucket whose oldest items go first: made (and its bounds kept) as a stream.
    await _ensure_stream(js, response_items_stream_config(settings))
    table = await load_route_table(js)
    if table is None:
        table = settings.route_table
        await routes.create(ROUTE_TABLE_KEY, msgspec.json.encode(table))
        log.info("seeded the route table from settings (%d routes)", len(table.routes))
    await sync_dispatch_consumers(js, settings, table)
    return table


async def provision_client(nc: NATS, settings: Settings, *, timeout: float = 10.0) -> list[Skipped]:
    """Provision CLIENT (connected as admin): the client-key bucket, the audit stream, the web
    app's sessions bucket, the Batch API's files (object store), batch records and line
    results, and the management API's Idempotency-Key answers. Returns the buckets it had to
    skip (the NATS config of an older version: see :data:`RENDER_AGAIN`), empty when none.

    The audit stream is created once and never updated from here: the admin identity may
    create it but not reshape it (see ``bus.permissions``), so it cannot shrink its own log.
    """
    js = nc.jetstream(timeout=timeout)
    await _ensure_kv(js, s.KEYS_BUCKET, settings)
    try:
        await js.stream_info(s.AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(audit_stream_config(settings))
        log.info("created stream %s", s.AUDIT_STREAM)
    await _ensure_kv(js, s.BATCHES_BUCKET, settings)
    await _ensure_kv(js, s.BATCH_LINES_BUCKET, settings)
    try:
        await js.object_store(s.FILES_BUCKET)
    except BucketNotFoundError:
        await js.create_object_store(s.FILES_BUCKET, config=files_store_config(settings))
        log.info("created object store %s", s.FILES_BUCKET)
    else:
        await _fit_files_store(js, settings)
    skipped = await _ensure_sessions_bucket(js, settings)
    return skipped + await _ensure_idempotency_bucket(js, settings)


def _refused(js: JetStreamContext, bucket: str) -> bool:
    """Whether the server refused this connection a subject of ``bucket`` (an older version's
    NATS config). Such a request is never answered (a timeout, like a slow answer); the
    server says "Permissions Violation" apart, which nats-py keeps as the connection's last
    error (and passes to its error callback). A timeout without it is a slow server (a
    loaded cluster creating a replicated stream): not a bucket to skip, but a call to retry
    (the caller's :func:`~switchyard.stack.natsnodes.until_jetstream_ready`, until its
    deadline), which it said was one, with the wrong advice."""
    error = str(getattr(getattr(js, "_nc", None), "last_error", None) or "")
    return "permissions violation" in error.lower() and bucket in error


async def _ensure_idempotency_bucket(js: JetStreamContext, settings: Settings) -> list[Skipped]:
    """The management API's Idempotency-Key answers, last too: as for the sessions bucket, an
    older version's NATS config lets the admin identity not make it (refused: see
    :func:`_refused`), which is said and leaves the rest provisioned (it stopped the
    provisioning with a traceback). Any other failure (a timeout too) is raised."""
    try:
        await _ensure_kv(js, s.ADMIN_IDEMPOTENCY_BUCKET, settings)
    except (TimeoutError, NatsError) as exc:
        if not _refused(js, s.ADMIN_IDEMPOTENCY_BUCKET):
            raise
        costs = "a key create that sends an Idempotency-Key header is a 503"
        log.warning(
            "KV bucket %s not created (%s): %s; until then %s",
            s.ADMIN_IDEMPOTENCY_BUCKET,
            type(exc).__name__,
            RENDER_AGAIN,
            costs,
        )
        return [Skipped(s.ADMIN_IDEMPOTENCY_BUCKET, costs)]
    return []


async def _ensure_capped_kv(js: JetStreamContext, bucket: str, settings: Settings) -> None:
    """A bucket capped in size (``BUCKET_MAX_BYTES``) that drops its oldest entries when full
    (nats-py makes every bucket refuse new writes instead): made, or brought to that."""
    await _ensure_kv(js, bucket, settings)
    info = await js.stream_info(f"KV_{bucket}")
    config = info.config
    cap = BUCKET_MAX_BYTES[bucket]
    if config.max_bytes != cap or config.discard != js_api.DiscardPolicy.OLD:
        await js.update_stream(
            dataclasses.replace(config, max_bytes=cap, discard=js_api.DiscardPolicy.OLD)
        )
        log.info("KV bucket %s capped at %d bytes, oldest dropped first", bucket, cap)


async def _ensure_sessions_bucket(js: JetStreamContext, settings: Settings) -> list[Skipped]:
    """The web app's sessions bucket and the sign-in guard's, last: with the NATS config of an
    older version the admin identity may not make them (refused: see :func:`_refused`), which
    is said and leaves the rest provisioned; the gateways then keep their sessions (or
    wrong-token counts) in memory, as before, until they are made. The sign-in guard's is not
    tried once the sessions bucket was refused (one timeout, not two): both are then skipped.
    Any other failure (a timeout too) is raised."""
    skipped = [
        Skipped(s.ADMIN_SESSIONS_BUCKET, "each gateway keeps its web app sessions in its memory"),
        Skipped(s.ADMIN_SIGNIN_FAILURES_BUCKET, "each gateway counts wrong admin tokens alone"),
    ]
    try:
        await _ensure_kv(js, s.ADMIN_SESSIONS_BUCKET, settings)
        skipped.pop(0)
        await _ensure_capped_kv(js, s.ADMIN_SIGNIN_FAILURES_BUCKET, settings)
    except (TimeoutError, NatsError) as exc:
        if not _refused(js, skipped[0].bucket):
            raise
        log.warning(
            "KV bucket %s not created (%s): %s; until then each gateway keeps its web app "
            "sessions (or its count of wrong admin tokens) in its own memory",
            " or ".join(skip.bucket for skip in skipped),
            type(exc).__name__,
            RENDER_AGAIN,
        )
        return skipped
    return []


async def _fit_files_store(js: JetStreamContext, settings: Settings) -> None:
    """Apply the settings to the existing files store, in place (nothing stored is lost).

    Its cap becomes ``batch.files_max_bytes`` (earlier builds made it without one; a cap
    below what is stored removes nothing: uploads are refused until enough is deleted or
    expires). It gets ``stream_replicas`` if it has fewer (earlier builds made it with one
    replica whatever the cluster's size); never fewer, which would drop copies.
    """
    stream = f"OBJ_{s.FILES_BUCKET}"
    config = (await js.stream_info(stream)).config
    wanted = files_store_config(settings)
    replicas = max(config.num_replicas or 1, wanted.replicas)
    if config.max_bytes == wanted.max_bytes and config.num_replicas == replicas:
        return
    await js.update_stream(
        dataclasses.replace(config, max_bytes=wanted.max_bytes, num_replicas=replicas)
    )
    log.info(
        "stream %s now holds at most %d bytes, with %d replicas",
        stream,
        wanted.max_bytes,
        replicas,
    )


async def _ensure_kv(js: JetStreamContext, bucket: str, settings: Settings) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(bucket_config(bucket, settings))
        log.info("created KV bucket %s", bucket)
        return kv


def skipped_report(skipped: list[Skipped], out: TextIO, err: TextIO, done: str) -> None:
    """Writes ``done`` (the line saying what was provisioned) to ``out``, with ", except N KV
    buckets" when some were skipped, and then to ``err`` each of them, what it costs and what
    to do."""
    print(
        done + (f", except {len(skipped)} KV buckets (named on stderr)" if skipped else ""),
        file=out,
        flush=True,  # (before the names on stderr)
    )
    for skip in skipped:
        print(f"not provisioned: KV bucket {skip.bucket} ({skip.costs})", file=err)
    if skipped:
        print(f"to provision them: {RENDER_AGAIN}", file=err)
