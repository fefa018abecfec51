"""Create streams, consumers and KV buckets: idempotent, and done by the provisioner only.

Workers bind to what exists and never create JetStream objects, so a worker's credentials cannot
delete or reshape a queue. Running this twice changes nothing; changed settings (a deployment's
concurrency, a stream limit) are applied in place without losing queued messages.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import subjects as s
from switchyard.config import Settings
from switchyard.schemas.routing import RouteTable

log = logging.getLogger("switchyard.provision")

ROUTE_TABLE_KEY = "table"
ACCOUNTING_CONSUMER = "accounting"
# Cooldown entries carry their own expiry; the bucket TTL only sweeps stale ones.
HEALTH_TTL_S = 3600.0


def dispatch_stream_config(settings: Settings) -> js_api.StreamConfig:
    st = settings.streams
    return js_api.StreamConfig(
        name=s.DISPATCH_STREAM,
        description="queued LLM requests, one subject per deployment",
        subjects=[s.DISPATCH_ALL],
        retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.nats.stream_replicas,
        discard=js_api.DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs_per_subject=st.dispatch_queue_limit,
        max_age=st.dispatch_max_age_s,
        duplicate_window=st.duplicate_window_s,
        max_msg_size=settings.ingress.max_body_bytes + 64 * 1024,
    )


def usage_stream_config(settings: Settings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=s.USAGE_STREAM,
        description="usage events: tokens per request, input to accounting",
        subjects=[s.USAGE],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.nats.stream_replicas,
        max_age=settings.streams.usage_max_age_s,
        duplicate_window=max(settings.streams.duplicate_window_s, 600.0),
    )


def dispatch_consumer_config(
    settings: Settings, deployment_id: str, concurrency: int
) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=s.dispatch_consumer(deployment_id),
        description=f"model-proxy workers for deployment {deployment_id}",
        filter_subject=s.dispatch(deployment_id),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        # The concurrency limit holds across every model-proxy replica (DESIGN §3).
        max_ack_pending=concurrency,
        ack_wait=settings.modelproxy.ack_wait_s,
        max_deliver=settings.modelproxy.max_deliver,
        max_waiting=4096,
    )


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


async def sync_dispatch_consumers(
    js: JetStreamContext, settings: Settings, table: RouteTable
) -> list[str]:
    """Create or update one durable consumer per deployment in ``table``; returns their ids.

    Consumers of deployments no longer routed are left alone (their queued requests drain).
    """
    ids = []
    for dep_id, (provider, deployment) in table.deployments().items():
        concurrency = deployment.concurrency or provider.concurrency
        await js.add_consumer(
            s.DISPATCH_STREAM, dispatch_consumer_config(settings, dep_id, concurrency)
        )
        ids.append(dep_id)
    return ids


async def provision_core(nc: NATS, settings: Settings) -> RouteTable:
    """Provision CORE (connected as the provisioner). Returns the live route table.

    The route table is seeded from settings only when the bucket holds none, so changes made
    at run time survive restarts.
    """
    js = nc.jetstream(timeout=10)
    await _ensure_stream(js, dispatch_stream_config(settings))
    await _ensure_stream(js, usage_stream_config(settings))
    await js.add_consumer(
        s.USAGE_STREAM,
        js_api.ConsumerConfig(
            durable_name=ACCOUNTING_CONSUMER,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            max_ack_pending=1024,
            ack_wait=30.0,
        ),
    )
    routes = await _ensure_kv(js, s.ROUTES_BUCKET, settings, history=20)
    await _ensure_kv(js, s.HEALTH_BUCKET, settings, history=1, ttl=HEALTH_TTL_S)
    table = await load_route_table(js)
    if table is None:
        table = settings.route_table
        await routes.create(ROUTE_TABLE_KEY, msgspec.json.encode(table))
        log.info("seeded the route table from settings (%d routes)", len(table.routes))
    await sync_dispatch_consumers(js, settings, table)
    return table


async def provision_client(nc: NATS, settings: Settings) -> None:
    """Provision CLIENT (connected as admin): the client-key bucket."""
    js = nc.jetstream(timeout=10)
    await _ensure_kv(js, s.KEYS_BUCKET, settings, history=5)


async def _ensure_kv(
    js: JetStreamContext, bucket: str, settings: Settings, *, history: int, ttl: float | None = None
) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(
            js_api.KeyValueConfig(
                bucket=bucket,
                history=history,
                ttl=ttl,
                storage=js_api.StorageType.FILE,
                replicas=settings.nats.stream_replicas,
                direct=True,
            )
        )
        log.info("created KV bucket %s", bucket)
        return kv


async def load_route_table(js: JetStreamContext) -> RouteTable | None:
    """The route table stored in KV, or None if none was seeded yet."""
    try:
        kv = await js.key_value(s.ROUTES_BUCKET)
        entry = await kv.get(ROUTE_TABLE_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    if entry.value is None:
        return None
    return msgspec.json.decode(entry.value, type=RouteTable)
