"""Least-privilege NATS permissions of every identity: the zone contract in data.

The server config is rendered from this table, and the zone tests check the running server
against an independent table of their own, so a loosened permission here fails a test.
Wildcards match whole tokens only (``$JS.ACK.DISPATCH.>`` works, ``DISPATCH*`` matches nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.bus import subjects as s
from switchyard.bus.identities import Identity, Zone

# Anything that could yield a provider key, denied explicitly to all but the model-proxy.
_SECRET_VALUES = (f"{s.SECRETS_GET_PREFIX}.>",)


@dataclass(frozen=True, slots=True)
class Permissions:
    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    # Lets a service answer requests it received (their reply subjects), and nothing else.
    allow_responses: bool = False


def _kv_read(bucket: str) -> tuple[str, ...]:
    """What a KV watcher/reader needs: stream info, direct get, an ordered consumer."""
    stream = f"KV_{bucket}"
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def _stream_follow(stream: str) -> tuple[str, ...]:
    """What following a stream with an ordered consumer needs (and reading it by sequence)."""
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def _kv_write(bucket: str) -> tuple[str, ...]:
    return (f"$KV.{bucket}.>",)


def _objects(bucket: str) -> tuple[str, ...]:
    """Read and write an object store (nats-py looks the stream up by subject on reads)."""
    stream = f"OBJ_{bucket}"
    return (
        f"$O.{bucket}.>",
        "$JS.API.STREAM.NAMES",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.DIRECT.GET.{stream}",  # a chunk at a time, by sequence (runtime.objects)
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


# The Batch API's state (CLIENT): files, batch records, line results.
_BATCH_STATE = (
    *_objects(s.FILES_BUCKET),
    *_kv_read(s.BATCHES_BUCKET),
    *_kv_write(s.BATCHES_BUCKET),
    *_kv_read(s.BATCH_LINES_BUCKET),
    *_kv_write(s.BATCH_LINES_BUCKET),
)


def _heartbeat(name: str) -> str:
    """A process may report only under its own component name."""
    return f"{s.PROCESS_STATS}.{name}.>"


def permissions_for(identity: Identity) -> Permissions:
    """The permissions of a service identity or an internal client."""
    inbox = (f"{identity.inbox_prefix}.>",)
    name = identity.name
    if identity.zone is Zone.CLIENT:
        if name in ("tail", "gateway"):
            return Permissions(
                publish_allow=(
                    *s.LLM_API,
                    *_kv_read(s.KEYS_BUCKET),
                    _heartbeat(name),
                    *_objects(s.FILES_BUCKET),  # the Batch API: files and batch records
                    *_kv_read(s.BATCHES_BUCKET),
                    *_kv_write(s.BATCHES_BUCKET),
                ),
                publish_deny=(
                    *_SECRET_VALUES,
                    f"{s.SECRETS_ADMIN_PREFIX}.>",
                    f"{s.CONTROL_ADMIN_PREFIX}.>",
                ),
                subscribe_allow=inbox,
                allow_responses=True,  # LLMClient answers probes (see INTERNAL below)
            )
        if name == "admin":
            return Permissions(
                publish_allow=(
                    f"{s.SECRETS_ADMIN_PREFIX}.>",
                    f"{s.CONTROL_ADMIN_PREFIX}.>",
                    *_kv_read(s.KEYS_BUCKET),
                    *_kv_write(s.KEYS_BUCKET),
                    # The gateway's budget watch marks keys whose budget is used up, in
                    # CORE's bucket (imported: writes, and a read of one mark by name).
                    s.KEY_SPENT_WRITES,
                    f"{s.KEY_SPENT_DIRECT_GET_PREFIX}.>",
                    f"$JS.API.STREAM.CREATE.KV_{s.KEYS_BUCKET}",
                    f"$JS.API.STREAM.UPDATE.KV_{s.KEYS_BUCKET}",
                    # What each Idempotency-Key of the management API answered (a day).
                    *_kv_read(s.ADMIN_IDEMPOTENCY_BUCKET),
                    *_kv_write(s.ADMIN_IDEMPOTENCY_BUCKET),
                    f"$JS.API.STREAM.CREATE.KV_{s.ADMIN_IDEMPOTENCY_BUCKET}",
                    # The audit log: append and read; create it once, never update, purge or
                    # delete it (the stream also denies deletes and purges itself).
                    s.AUDIT_ALL,
                    *_stream_follow(s.AUDIT_STREAM),
                    f"$JS.API.STREAM.CREATE.{s.AUDIT_STREAM}",
                    # The web app's sessions, shared by every gateway replica (it provisions
                    # the bucket: create it, or update its settings; never delete or purge).
                    *_kv_read(s.ADMIN_SESSIONS_BUCKET),
                    *_kv_write(s.ADMIN_SESSIONS_BUCKET),
                    f"$JS.API.STREAM.CREATE.KV_{s.ADMIN_SESSIONS_BUCKET}",
                    f"$JS.API.STREAM.UPDATE.KV_{s.ADMIN_SESSIONS_BUCKET}",
                    # The sign-in guard's wrong tokens per address, shared likewise (created,
                    # and updated to discard its oldest entries when full).
                    *_kv_read(s.ADMIN_SIGNIN_FAILURES_BUCKET),
                    *_kv_write(s.ADMIN_SIGNIN_FAILURES_BUCKET),
                    f"$JS.API.STREAM.CREATE.KV_{s.ADMIN_SIGNIN_FAILURES_BUCKET}",
                    f"$JS.API.STREAM.UPDATE.KV_{s.ADMIN_SIGNIN_FAILURES_BUCKET}",
                    # Provisions the Batch API's buckets; reads batch progress. It never
                    # writes a record: a subject's publish right is also a delete, a purge and
                    # a `Nats-Rollup: all` of the bucket, and every CLI operator holds this
                    # identity. An admin's cancel is written by the gateway's own connection
                    # (admin/batch_cancel.py), as a tenant's is.
                    *_kv_read(s.BATCHES_BUCKET),
                    *_kv_read(s.BATCH_LINES_BUCKET),
                    f"$JS.API.STREAM.INFO.OBJ_{s.FILES_BUCKET}",
                    *(
                        f"$JS.API.STREAM.{op}.{stream}"
                        for op in ("CREATE", "UPDATE")
                        for stream in (
                            f"KV_{s.BATCHES_BUCKET}",
                            f"KV_{s.BATCH_LINES_BUCKET}",
                            f"OBJ_{s.FILES_BUCKET}",
                        )
                    ),
                ),
                publish_deny=(*_SECRET_VALUES, *s.LLM_API),
                subscribe_allow=inbox,
            )
        if name == "batch":
            return Permissions(
                publish_allow=(
                    s.CHAT,
                    s.COMPLETE,
                    s.EMBED,
                    s.RESPONSES,
                    s.MESSAGES,  # Anthropic's message batches
                    # Lines in flight when the runner stops: their provider calls stop (each
                    # is sent again, under a higher attempt, after the restart).
                    s.CANCEL,
                    _heartbeat(name),
                    *_BATCH_STATE,
                    # Reads a batch's line results a page at a time.
                    f"$JS.API.CONSUMER.MSG.NEXT.KV_{s.BATCH_LINES_BUCKET}.*",
                    # A finished batch's line results; expired files' and batches' records.
                    f"$JS.API.STREAM.PURGE.KV_{s.BATCH_LINES_BUCKET}",
                    f"$JS.API.STREAM.PURGE.KV_{s.BATCHES_BUCKET}",
                    # A batch key's record (its budget), one by name: read, never listed.
                    f"$JS.API.DIRECT.GET.KV_{s.KEYS_BUCKET}.$KV.{s.KEYS_BUCKET}.k.*",
                ),
                publish_deny=(
                    *_SECRET_VALUES,
                    f"{s.SECRETS_ADMIN_PREFIX}.>",
                    f"{s.CONTROL_ADMIN_PREFIX}.>",
                ),
                subscribe_allow=inbox,
                allow_responses=True,  # LLMClient answers probes (see INTERNAL below)
            )
        raise KeyError(f"no permissions defined for identity {name!r}")
    if identity.zone is Zone.INTERNAL:
        # Internal clients: the LLM API only, from an account that imports nothing else and
        # has no JetStream, so no reply subject they name can reach a stream (Zone's docstring).
        # The denials restate that for subjects other accounts hold.
        return Permissions(
            publish_allow=s.LLM_API,
            publish_deny=(
                *_SECRET_VALUES,
                f"{s.SECRETS_ADMIN_PREFIX}.>",
                f"{s.CONTROL_ADMIN_PREFIX}.>",
            ),
            subscribe_allow=inbox,
            # To answer a model-proxy's probe (a keep-alive with a reply subject), so a
            # client that crashes mid-request is noticed: only to a message it was sent.
            allow_responses=True,
        )
    if name == "head":
        return Permissions(
            publish_allow=(
                _heartbeat(name),
                f"{s.DISPATCH_PREFIX}.>",
                f"{s.HOLD_PREFIX}.>",  # a saturated deployment's requests wait there
                f"$JS.API.STREAM.INFO.{s.DISPATCH_STREAM}",
                "_R_.>",  # errors for rerouted requests go to the original caller
                *_kv_read(s.ROUTES_BUCKET),
                *_kv_read(s.HEALTH_BUCKET),
                *_kv_write(s.HEALTH_BUCKET),
                *_kv_read(s.SCHED_BUCKET),
                *_kv_read(s.KEY_SPENT_BUCKET),  # keys whose budget is used up
                f"{s.KEYS_DIRECT_GET_PREFIX}.>",  # read a client key's policy (imported)
            ),
            publish_deny=_SECRET_VALUES,
            subscribe_allow=(*s.LLM_API, s.REROUTE, *inbox, "$SRV.>", s.KEYS_CHANGES),
            allow_responses=True,
        )
    if name == "modelproxy":
        return Permissions(
            publish_allow=(
                _heartbeat(name),
                f"{s.TRAFFIC_STATS}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{s.DISPATCH_STREAM}.*",
                f"$JS.API.CONSUMER.INFO.{s.DISPATCH_STREAM}.*",
                f"$JS.ACK.{s.DISPATCH_STREAM}.>",
                "_R_.>",  # it answers requests it never received (DESIGN §5)
                f"{s.SECRETS_GET_PREFIX}.>",
                s.USAGE,
                s.REROUTE,
                *_kv_read(s.ROUTES_BUCKET),
                *_kv_write(s.HEALTH_BUCKET),
                # Who created each native Responses answer (previous_response_id's owner).
                *_kv_read(s.RESPONSE_OWNERS_BUCKET),
                *_kv_write(s.RESPONSE_OWNERS_BUCKET),
                # Translated Responses answers' items, read back for item references.
                *_kv_read(s.RESPONSE_ITEMS_BUCKET),
                *_kv_write(s.RESPONSE_ITEMS_BUCKET),
                # The cancels stored while it was not running: read at start, with a consumer
                # of its own (never written, purged or reshaped from here).
                f"$JS.API.STREAM.INFO.{s.CANCELS_STREAM}",
                f"$JS.API.CONSUMER.CREATE.{s.CANCELS_STREAM}.*",
                f"$JS.API.CONSUMER.MSG.NEXT.{s.CANCELS_STREAM}.*",
                f"$JS.API.CONSUMER.DELETE.{s.CANCELS_STREAM}.*",
            ),
            subscribe_allow=(
                *inbox,
                f"{s.SECRETS_CHANGED_PREFIX}.>",
                s.CANCEL,
                s.DISPATCH_LEADER_ELECTED,
            ),
        )
    if name == "secrets":
        return Permissions(
            publish_allow=(f"{s.SECRETS_CHANGED_PREFIX}.>", _heartbeat(name)),
            subscribe_allow=(
                f"{s.SECRETS_GET_PREFIX}.>",
                f"{s.SECRETS_ADMIN_PREFIX}.>",
                *inbox,
                "$SRV.>",
            ),
            allow_responses=True,
        )
    if name == "accounting":
        return Permissions(
            publish_allow=(
                _heartbeat(name),
                f"$JS.API.CONSUMER.MSG.NEXT.{s.USAGE_STREAM}.*",
                f"$JS.API.CONSUMER.INFO.{s.USAGE_STREAM}.*",
                # Which life of the stream a batch is from (its creation time): applied
                # batches are remembered by stream sequence, per stream instance.
                f"$JS.API.STREAM.INFO.{s.USAGE_STREAM}",
                f"$JS.ACK.{s.USAGE_STREAM}.>",
                *_kv_read(s.ROUTES_BUCKET),  # per-deployment price overrides
            ),
            publish_deny=_SECRET_VALUES,
            subscribe_allow=(*inbox, s.USAGE_LEADER_ELECTED),
        )
    if name == "control":
        dispatch, hold = s.DISPATCH_STREAM, s.HOLD_STREAM
        return Permissions(
            publish_allow=(
                _heartbeat(name),
                # Queue depth for the whole platform: every dispatch consumer in one call, and
                # the oldest waiting message of a deployment.
                f"$JS.API.CONSUMER.LIST.{dispatch}",
                f"$JS.API.STREAM.MSG.GET.{dispatch}",
                # Accounting's backlog: usage batches stored and not yet applied.
                f"$JS.API.CONSUMER.INFO.{s.USAGE_STREAM}.accounting",
                *_kv_read(s.ROUTES_BUCKET),
                *_kv_write(s.ROUTES_BUCKET),
                *_kv_read(s.HEALTH_BUCKET),
                *_kv_write(s.HEALTH_BUCKET),
                f"$JS.API.STREAM.INFO.{dispatch}",
                f"$JS.API.CONSUMER.CREATE.{dispatch}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{dispatch}.>",
                f"$JS.API.CONSUMER.INFO.{dispatch}.>",
                # The feeder: read HOLD with its own consumer, move each request into
                # dispatch, then purge what moved from HOLD; publish the saturation state.
                f"{s.DISPATCH_PREFIX}.>",
                f"$JS.API.STREAM.INFO.{hold}",
                f"$JS.API.CONSUMER.CREATE.{hold}",
                f"$JS.API.CONSUMER.CREATE.{hold}.>",
                f"$JS.API.CONSUMER.DELETE.{hold}.>",
                f"$JS.API.CONSUMER.INFO.{hold}.>",
                f"$JS.FC.{hold}.>",
                f"$JS.API.STREAM.PURGE.{hold}",
                # A request whose deadline passed while held: deleted from HOLD (whoever
                # deletes it answers: once), then its 504 to the caller's reply mapping.
                f"$JS.API.STREAM.MSG.DELETE.{hold}",
                "_R_.>",
                *_kv_read(s.SCHED_BUCKET),
                *_kv_write(s.SCHED_BUCKET),
            ),
            publish_deny=_SECRET_VALUES,
            subscribe_allow=(
                f"{s.CONTROL_ADMIN_PREFIX}.>",
                *inbox,
                "$SRV.>",
                s.STATS_ALL,
                # A provider key stored or rotated ends its deployments' cooldowns (no value).
                f"{s.SECRETS_CHANGED_PREFIX}.>",
                # Each acknowledgement of a saturated deployment's request is a freed slot.
                f"$JS.ACK.{dispatch}.>",
            ),
            allow_responses=True,
        )
    if name == "provisioner":
        return Permissions(
            publish_allow=("$JS.API.>", *_kv_write(s.ROUTES_BUCKET), *_kv_write(s.HEALTH_BUCKET)),
            publish_deny=_SECRET_VALUES,
            subscribe_allow=inbox,
        )
    raise KeyError(f"no permissions defined for identity {name!r}")
