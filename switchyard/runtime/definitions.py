"""Streams, consumers and KV buckets: their names' keys and their definitions, in one place.

The provisioner (``switchyard.stack.provision``, or a deployment's init job) creates them from
these definitions; workers only bind to what exists. The control service uses
:func:`sync_dispatch_consumers` when a route change adds a deployment, so a queue exists before
any head can dispatch to it.
"""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from switchyard.bus import subjects as s
from switchyard.config import Settings
from switchyard.schemas.routing import RouteTable

ROUTE_TABLE_KEY = "table"
ACCOUNTING_CONSUMER = "accounting"
# Cooldown entries carry their own expiry; the bucket TTL only sweeps stale ones.
HEALTH_TTL_S = 3600.0
# OpenAI keeps a stored response 30 days: its owner is remembered as long.
RESPONSE_OWNER_TTL_S = 30 * 86400.0
# How long the management API remembers an Idempotency-Key's answer (a retried create within
# it gets the first answer back): a day, as is common practice.
ADMIN_IDEMPOTENCY_TTL_S = 86400.0
# The admin web app's sessions end 24 hours after sign-in at the latest: their records go then.
ADMIN_SESSION_TTL_S = 24 * 3600.0
# Spent marks are written again within 20 minutes while true (limits.spent_marks): a week
# removes the rest.
KEY_SPENT_TTL_S = 7 * 86400.0
# The sign-in guard's window: an address's wrong admin tokens are counted this long, and kept
# in their bucket as long (its entries' TTL).
ADMIN_SIGNIN_WINDOW_S = 300.0
# The wrong-token bucket's cap: past it the oldest entries go (a flood from many addresses
# forgets the oldest counts; it never fills JetStream, nor touches the sessions).
ADMIN_SIGNIN_FAILURES_MAX_BYTES = 4 * 1024 * 1024


def dispatch_stream_config(settings: Settings) -> js_api.StreamConfig:
    st = settings.streams
    return js_api.StreamConfig(
        name=s.DISPATCH_STREAM,
        description="queued LLM requests, one subject per deployment",
        subjects=[s.DISPATCH_ALL],
        retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
        discard=js_api.DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs_per_subject=st.dispatch_queue_limit,
        max_age=st.dispatch_max_age_s,
        duplicate_window=st.duplicate_window_s,
        max_msg_size=settings.ingress.max_body_bytes + 64 * 1024,
    )


def hold_stream_config(settings: Settings) -> js_api.StreamConfig:
    """Requests waiting while their deployment is saturated: one subject per (deployment,
    priority, tenant), so a tenant's limit is its own subject's; the feeder deletes each
    message once it is stored in dispatch (limits retention: it reads them with a fresh
    consumer after every restart)."""
    st = settings.streams
    return js_api.StreamConfig(
        name=s.HOLD_STREAM,
        description="requests held for fair order while their deployment is saturated",
        subjects=[s.HOLD_ALL],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
        discard=js_api.DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs_per_subject=st.hold_tenant_limit,
        max_bytes=st.hold_max_bytes,
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
        num_replicas=settings.stream_replicas,
        max_age=settings.streams.usage_max_age_s,
        max_bytes=settings.streams.usage_max_bytes,
        # The oldest go first: accounted long before, unless accounting was down longer than
        # the bounds hold (then accounting logs and counts what was lost: accounting/loss.py).
        discard=js_api.DiscardPolicy.OLD,
        duplicate_window=max(settings.streams.duplicate_window_s, 600.0),
    )


# A cancel matters until its request's deadline: an hour at most, the longest an edge grants.
# The stream keeps as many as a model-proxy remembers (an honest cancel is under 1 KiB).
CANCELS_MAX_AGE_S = 3600.0
CANCELS_MAX_MSGS = 20_000
CANCELS_MAX_BYTES = 32 * 1024 * 1024
CANCEL_MAX_MSG_BYTES = 8 * 1024


def cancels_stream_config(settings: Settings) -> js_api.StreamConfig:
    """CORE: every ``llm.v1.cancel`` as it arrives (from CLIENT and INTERNAL, through their
    import of the LLM API), so a model-proxy that starts later still drops the queued requests
    whose callers left. Newest kept; never acknowledged to the sender."""
    return js_api.StreamConfig(
        name=s.CANCELS_STREAM,
        description="cancels of callers that left; model-proxies read them when they start",
        subjects=[s.CANCEL],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
        discard=js_api.DiscardPolicy.OLD,
        max_age=CANCELS_MAX_AGE_S,
        max_msgs=CANCELS_MAX_MSGS,
        max_bytes=CANCELS_MAX_BYTES,
        max_msg_size=CANCEL_MAX_MSG_BYTES,
        no_ack=True,
    )


# The admin audit log keeps a year and at most a million entries (oldest dropped first).
AUDIT_MAX_AGE_S = 400 * 86400.0
AUDIT_MAX_MSGS = 1_000_000


def audit_stream_config(settings: Settings) -> js_api.StreamConfig:
    """CLIENT: admin actions. The admin identity may append and read, never delete or purge."""
    return js_api.StreamConfig(
        name=s.AUDIT_STREAM,
        description="admin actions: who changed what, when (web UI, API, CLI)",
        subjects=[s.AUDIT_ALL],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
        discard=js_api.DiscardPolicy.OLD,
        max_age=AUDIT_MAX_AGE_S,
        max_msgs=AUDIT_MAX_MSGS,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


# A removed deployment's consumer: every queued request is pulled at once and rerouted.
DRAIN_ACK_PENDING = 1024


def response_items_stream_config(settings: Settings) -> js_api.StreamConfig:
    """The ``sy_response_items`` bucket's stream: a KV bucket (one value per key) whose oldest
    items go first when it is full (nats-py makes buckets refuse new writes instead), kept
    ``streams.response_items_max_age_s``. Written as nats-py writes a bucket's stream, so
    ``js.key_value`` binds to it."""
    st = settings.streams
    bucket = s.RESPONSE_ITEMS_BUCKET
    return js_api.StreamConfig(
        name=f"KV_{bucket}",
        description="output items of translated Responses answers, for item references",
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        discard=js_api.DiscardPolicy.OLD,
        duplicate_window=120.0,
        max_age=st.response_items_max_age_s,
        max_bytes=st.response_items_max_bytes,
        max_msgs_per_subject=1,
        storage=js_api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
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


def accounting_consumer_config() -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=ACCOUNTING_CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        max_ack_pending=1024,
        ack_wait=30.0,
    )


# KV buckets: name -> (history, ttl seconds or None).
BUCKETS: dict[str, tuple[int, float | None]] = {
    s.ROUTES_BUCKET: (20, None),  # CORE: the route table, with some history for audits
    s.HEALTH_BUCKET: (1, HEALTH_TTL_S),  # CORE: cooldowns
    s.KEYS_BUCKET: (5, None),  # CLIENT: client key records
    s.KEY_SPENT_BUCKET: (1, KEY_SPENT_TTL_S),  # CORE: keys whose budget is used up
    s.SCHED_BUCKET: (1, None),  # CORE: saturation state per deployment (feeder -> heads)
    s.RESPONSE_OWNERS_BUCKET: (1, RESPONSE_OWNER_TTL_S),  # CORE: response id -> secret hash, key id
    s.BATCHES_BUCKET: (1, None),  # CLIENT: Batch API batch records
    s.BATCH_LINES_BUCKET: (1, None),  # CLIENT: one result per batch line, written once
    s.ADMIN_IDEMPOTENCY_BUCKET: (1, ADMIN_IDEMPOTENCY_TTL_S),  # CLIENT: Idempotency-Key answers
    s.ADMIN_SESSIONS_BUCKET: (1, ADMIN_SESSION_TTL_S),  # CLIENT: web app sessions (gateways)
    # CLIENT: wrong admin tokens per address (gateways); capped: ADMIN_SIGNIN_FAILURES_MAX_BYTES
    s.ADMIN_SIGNIN_FAILURES_BUCKET: (1, ADMIN_SIGNIN_WINDOW_S),
}
# KV buckets capped in size: name -> max bytes (the provisioner makes them discard the oldest).
BUCKET_MAX_BYTES: dict[str, int] = {
    s.ADMIN_SIGNIN_FAILURES_BUCKET: ADMIN_SIGNIN_FAILURES_MAX_BYTES,
}


def bucket_config(bucket: str, settings: Settings) -> js_api.KeyValueConfig:
    history, ttl = BUCKETS[bucket]
    return js_api.KeyValueConfig(
        bucket=bucket,
        history=history,
        ttl=ttl,
        storage=js_api.StorageType.FILE,
        replicas=settings.stream_replicas,
        direct=True,
        max_bytes=BUCKET_MAX_BYTES.get(bucket),
    )


def files_store_config(settings: Settings) -> js_api.ObjectStoreConfig:
    """The Batch API's files: uploaded inputs and the outputs batches produce (CLIENT).

    Capped at ``batch.files_max_bytes``: the store refuses what does not fit (nats-py makes
    object stores discard new), so a full files store refuses uploads instead of filling the
    JetStream store every stream needs. Lowering the cap below what is stored removes nothing.
    """
    return js_api.ObjectStoreConfig(
        bucket=s.FILES_BUCKET,
        description="Batch API files (JSONL inputs and outputs)",
        storage=js_api.StorageType.FILE,
        replicas=settings.stream_replicas,
        max_bytes=settings.batch.files_max_bytes,
    )


async def sync_dispatch_consumers(
    js: JetStreamContext, settings: Settings, table: RouteTable
) -> list[str]:
    """Create or update one durable consumer per deployment in ``table``; returns their ids.

    Consumers of deployments no longer routed are kept: see :func:`open_removed_consumers`.
    """
    ids = []
    for dep_id, (provider, deployment) in table.deployments().items():
        concurrency = deployment.concurrency or provider.concurrency
        await js.add_consumer(
            s.DISPATCH_STREAM, dispatch_consumer_config(settings, dep_id, concurrency)
        )
        ids.append(dep_id)
    return ids


async def open_removed_consumers(
    js: JetStreamContext, settings: Settings, removed: list[str]
) -> None:
    """Raise the concurrency of removed deployments' consumers to ``DRAIN_ACK_PENDING``: the
    model-proxies hand every request still queued there back to the heads, which must not
    wait behind the calls in hand (a stuck deployment is the usual reason to remove one).
    Only once every model-proxy follows the table without them: one still on the old table
    would call the provider with each request the higher limit lets through."""
    for dep_id in removed:
        await js.add_consumer(
            s.DISPATCH_STREAM, dispatch_consumer_config(settings, dep_id, DRAIN_ACK_PENDING)
        )


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
