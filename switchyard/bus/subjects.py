"""Every NATS subject, stream, consumer and bucket name, in one place.

Subjects carry a version token so a v2 can run beside v1. CORE exports only the ``llm.v1`` API
and ``secrets.v1.admin``; everything else here stays inside its account (DESIGN §5).
"""

from __future__ import annotations

import hashlib

# The LLM API (CORE service, exported to CLIENT with streamed responses).
CHAT = "llm.v1.chat"
COMPLETE = "llm.v1.complete"
EMBED = "llm.v1.embed"
MODELS = "llm.v1.models"
RESPONSES = "llm.v1.responses"  # the OpenAI Responses API dialect (answers in its events)
MESSAGES = "llm.v1.messages"  # Anthropic's Messages API dialect
COUNT_TOKENS = "llm.v1.count_tokens"  # Anthropic's token counting (POST /v1/messages/count_tokens)
INPUT_TOKENS = "llm.v1.input_tokens"  # OpenAI's token counting (POST /v1/responses/input_tokens)
# A caller abandons a request it streams (its HTTP client left): every model-proxy listens,
# the one serving it stops the provider call (matched by request id and key; no reply).
CANCEL = "llm.v1.cancel"
# One model-proxy of this queue group (on llm.v1.cancel) counts, logs and answers a message
# that cancels nothing: once, however many model-proxies hear it.
CANCEL_CHECKS_QUEUE = "cancel-checks"
# Every cancel is also stored here (CORE), for model-proxies that start after it was sent.
CANCELS_STREAM = "CANCELS"
LLM_API = (CHAT, COMPLETE, EMBED, MODELS, RESPONSES, MESSAGES, COUNT_TOKENS, INPUT_TOKENS, CANCEL)
HEAD_QUEUE = "head"

# Work queues (CORE only): one subject per deployment, one durable consumer each.
DISPATCH_STREAM = "DISPATCH"
DISPATCH_PREFIX = "llm.v1.dispatch"
DISPATCH_ALL = f"{DISPATCH_PREFIX}.>"
# Held requests (CORE only): when a deployment is saturated, heads park requests here, one
# subject per (deployment, priority, tenant); the feeder moves them into dispatch in fair order.
HOLD_STREAM = "HOLD"
HOLD_PREFIX = "llm.v1.hold"
HOLD_ALL = f"{HOLD_PREFIX}.>"
# A model-proxy hands a retryable failure back to the heads (CORE only).
REROUTE = "llm.v1.reroute"

# Usage events (CORE only): the accounting worker's input.
USAGE_STREAM = "USAGE"
USAGE = "llm.v1.usage"

# Secrets (CORE service). get is model-proxy only; admin is exported to CLIENT's admin identity.
SECRETS_GET_PREFIX = "secrets.v1.get"
SECRETS_ADMIN_PREFIX = "secrets.v1.admin"
SECRETS_CHANGED_PREFIX = "secrets.v1.changed"
SECRETS_QUEUE = "secrets"

# The control plane (CORE service; admin.* exported to CLIENT's admin identity).
CONTROL_ADMIN_PREFIX = "control.v1.admin"

# Monitoring (heartbeats from every process, traffic from model-proxies; the control service
# collects them). CLIENT exports its edges' heartbeats to CORE as a stream, nothing else.
STATS_PREFIX = "stats.v1"
PROCESS_STATS = f"{STATS_PREFIX}.process"
TRAFFIC_STATS = f"{STATS_PREFIX}.traffic"
STATS_ALL = f"{STATS_PREFIX}.>"
CLIENT_STATS = tuple(f"{PROCESS_STATS}.{edge}.>" for edge in ("tail", "gateway", "batch"))

# The admin audit log (CLIENT only): one subject per kind of change, written by the admin
# identity (API, web UI and CLI), appended and read, never deleted or purged.
AUDIT_STREAM = "AUDIT"
AUDIT_PREFIX = "audit.v1"
AUDIT_ALL = f"{AUDIT_PREFIX}.>"

# NATS KV buckets.
ROUTES_BUCKET = "sy_routes"  # CORE: the route table document
HEALTH_BUCKET = "sy_health"  # CORE: deployment cooldowns shared by all heads
KEYS_BUCKET = "sy_keys"  # CLIENT: client key hashes and limits
# CORE: client keys whose budget is used up (the gateway's budget watch writes, through an
# import only the admin identity may publish to; heads read): limits.spent_marks
KEY_SPENT_BUCKET = "sy_key_spent"
KEY_SPENT_WRITES = f"$KV.{KEY_SPENT_BUCKET}.>"
# CORE lets the admin identity (CLIENT) read one spent mark by name (a direct get), remapped
# under this prefix so CLIENT's own JetStream API does not answer: the budget watch reads a
# mark it did not write before it deletes it (admin.spent_writer).
KEY_SPENT_DIRECT_GET = f"$JS.API.DIRECT.GET.KV_{KEY_SPENT_BUCKET}.>"
KEY_SPENT_DIRECT_GET_PREFIX = f"sy.spentkv.DIRECT.GET.KV_{KEY_SPENT_BUCKET}"
SCHED_BUCKET = "sy_sched"  # CORE: per-deployment saturation state (feeder writes, heads read)
# CORE: which client key created each stored native Responses answer (model-proxies)
RESPONSE_OWNERS_BUCKET = "sy_response_owners"
# CORE: the output items of translated Responses answers, for later `item_reference`s
RESPONSE_ITEMS_BUCKET = "sy_response_items"
# The Batch API (CLIENT): uploaded and produced files, batch records, one result per line.
FILES_BUCKET = "sy_files"  # object store
BATCHES_BUCKET = "sy_batches"
BATCH_LINES_BUCKET = "sy_batch_lines"
# CLIENT: what each Idempotency-Key of the management API answered (a day; admin identity)
ADMIN_IDEMPOTENCY_BUCKET = "sy_admin_idempotency"
# CLIENT: the admin web app's sign-in sessions (by the cookie's digest), shared by every
# gateway replica, and the sign-out-everywhere cuts.
ADMIN_SESSIONS_BUCKET = "sy_admin_sessions"
# CLIENT: the sign-in guard's recent wrong admin tokens per address, shared by every gateway
# replica (entries expire with the guard's window; capped in size, oldest dropped first).
ADMIN_SIGNIN_FAILURES_BUCKET = "sy_admin_signin_failures"
# CLIENT shares the key bucket with CORE read-only: its change stream, and direct gets under
# this prefix (remapped so CORE's own JetStream API does not answer them).
KEYS_CHANGES = f"$KV.{KEYS_BUCKET}.>"
KEYS_DIRECT_GET_PREFIX = f"sy.clientkv.DIRECT.GET.KV_{KEYS_BUCKET}"


def dispatch(deployment_id: str) -> str:
    """The work-queue subject of one deployment."""
    return f"{DISPATCH_PREFIX}.{deployment_id}"


# JetStream announces each new consumer leader here (CORE). Pull requests live on the
# consumer's leader: when that node dies they die with it, unannounced, so a puller re-issues
# them on this advisory instead of waiting out its heartbeat watchdog.
LEADER_ELECTED_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED"
DISPATCH_LEADER_ELECTED = f"{LEADER_ELECTED_PREFIX}.{DISPATCH_STREAM}.*"
USAGE_LEADER_ELECTED = f"{LEADER_ELECTED_PREFIX}.{USAGE_STREAM}.*"


def leader_elected(stream: str, consumer: str) -> str:
    """The advisory JetStream sends when ``consumer`` of ``stream`` gets a new leader."""
    return f"{LEADER_ELECTED_PREFIX}.{stream}.{consumer}"


def dispatch_consumer(deployment_id: str) -> str:
    """The durable consumer name for one deployment's queue."""
    return f"dep-{deployment_id}"


def dispatch_acks(deployment_id: str) -> str:
    """The acknowledgements model-proxies send for one deployment's requests (the feeder
    listens to them while the deployment is saturated: each one is a freed slot)."""
    return f"$JS.ACK.{DISPATCH_STREAM}.{dispatch_consumer(deployment_id)}.>"


def hold(deployment_id: str, priority: str, tenant: str) -> str:
    """Where a request waits while its deployment is saturated."""
    return f"{HOLD_PREFIX}.{deployment_id}.{priority}.{tenant_token(tenant)}"


def hold_of(deployment_id: str) -> str:
    return f"{HOLD_PREFIX}.{deployment_id}.>"


def tenant_token(tenant: str) -> str:
    """``tenant`` as one subject token: itself when already safe, else a digest (so two
    tenants never share a queue)."""
    if tenant and token(tenant) == tenant:
        return tenant
    return "h-" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def secrets_get(name: str) -> str:
    return f"{SECRETS_GET_PREFIX}.{name}"


def secrets_admin(op: str) -> str:
    return f"{SECRETS_ADMIN_PREFIX}.{op}"


def secrets_changed(name: str) -> str:
    return f"{SECRETS_CHANGED_PREFIX}.{name}"


def control_admin(op: str) -> str:
    return f"{CONTROL_ADMIN_PREFIX}.{op}"


def token(text: str) -> str:
    """``text`` made safe as one subject token (no dots, wildcards or spaces)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:64] or "_"


def audit(action: str) -> str:
    """Where an admin action is recorded: ``audit.v1.<kind>.<verb>`` for ``kind.verb``."""
    kind, _, verb = action.partition(".")
    return f"{AUDIT_PREFIX}.{token(kind)}.{token(verb or 'change')}"


def process_stats(component: str, instance: str) -> str:
    """Where a process publishes its heartbeat."""
    return f"{PROCESS_STATS}.{token(component)}.{token(instance)}"


def traffic_stats(instance: str) -> str:
    """Where a model-proxy publishes its traffic report."""
    return f"{TRAFFIC_STATS}.{token(instance)}"
