"""Every metric name, label name and bucket boundary Switchyard exports, in one place.

Names follow the OpenTelemetry GenAI semantic conventions where they exist, as they appear in
Prometheus (dots become underscores, the unit becomes a suffix, counters end in ``_total``). The
conventions are still moving (``gen_ai.system`` became ``gen_ai.provider.name`` in v1.37; the
token histogram may become counters), so no other module spells a metric or label name: change
it here and the exporters, the dashboard test and the alert rules test follow.

Label values are bounded: model labels carry route aliases and configured upstream models only
(an unknown model collapses to ``_OTHER``), deployments come from the route table, and no label
ever carries a request id, a key id or a secret.
"""

from __future__ import annotations

# ---- GenAI semantic conventions (v1.41+, Prometheus form) ----

# Switchyard calling providers (it is their client).
CLIENT_OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"
CLIENT_TOKEN_USAGE = "gen_ai_client_token_usage"
CLIENT_TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
# Switchyard serving its own clients (it is their model server).
SERVER_REQUEST_DURATION = "gen_ai_server_request_duration_seconds"
SERVER_TIME_TO_FIRST_TOKEN = "gen_ai_server_time_to_first_token_seconds"
SERVER_TIME_PER_OUTPUT_TOKEN = "gen_ai_server_time_per_output_token_seconds"

OPERATION = "gen_ai_operation_name"
PROVIDER = "gen_ai_provider_name"
REQUEST_MODEL = "gen_ai_request_model"
RESPONSE_MODEL = "gen_ai_response_model"
TOKEN_TYPE = "gen_ai_token_type"
ERROR_TYPE = "error_type"
OTHER = "_OTHER"  # the semconv fallback value for an unknown or unbounded label value

# Bucket boundaries from the conventions.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
DURATION_BUCKETS += (5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: tuple[float, ...] = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
TOKEN_BUCKETS += (1048576, 4194304, 16777216, 67108864)
TTFT_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5)
TTFT_BUCKETS += (0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
PER_TOKEN_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
PER_TOKEN_BUCKETS += (0.75, 1.0, 2.5)

# gen_ai.operation.name values for Switchyard's operations.
OPERATIONS = {
    "chat": "chat",
    "complete": "text_completion",
    "embed": "embeddings",
    "responses": "chat",
    "messages": "chat",
    "count_tokens": "count_tokens",  # not semconv values; custom ones say what they are
    "input_tokens": "count_tokens",
}

# gen_ai.provider.name for each provider kind (well-known values; other kinds keep their name).
PROVIDERS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "bedrock": "aws.bedrock",
    "groq": "groq",
}

# ---- Switchyard's own ----

# Edges (tail, gateway).
HTTP_REQUESTS = "switchyard_http_requests_total"  # route, method, status
ASYNCIO_TASKS = "switchyard_asyncio_tasks"  # tasks alive in the process's event loop (soak)
REFUSALS = "switchyard_refusals_total"  # reason: auth, model, rpm, tpm, parallel, budget, ...
LIMITER_DURATION = "switchyard_limiter_duration_seconds"
EDGE_UNREAD_BYTES = "switchyard_edge_unread_bytes"  # stream replies held, not yet written
EDGE_SLOW_READERS = "switchyard_edge_slow_readers_total"  # streams ended: reader_too_slow
LIMITER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
ROUTE = "route"
METHOD = "method"
STATUS = "status"
REASON = "reason"

# Head.
ROUTING_ATTEMPTS = "switchyard_routing_attempts_total"  # outcome: dispatched, rerouted, ...
FALLBACKS = "switchyard_fallbacks_total"  # alias -> the fallback alias it used
COOLDOWNS_STARTED = "switchyard_cooldowns_total"  # deployment
COOLDOWN_ACTIVE = "switchyard_deployment_cooldown_active"  # deployment (0/1)
COOLDOWN_SECONDS = "switchyard_deployment_cooldown_seconds"  # deployment: seconds left
ROUTE_TABLE_REVISION = "switchyard_route_table_revision"
HEAD_SPENT_KEYS = "switchyard_head_spent_keys"  # spent marks a head holds
HEAD_SPENT_FOLLOWING = "switchyard_head_spent_following"  # 1 while it follows sy_key_spent
OUTCOME = "outcome"
ALIAS = "alias"
FALLBACK = "fallback"
DEPLOYMENT = "deployment"

# Model-proxy.
PROVIDER_ERRORS = "switchyard_provider_errors_total"  # deployment, error_type
QUEUE_WAIT = "switchyard_queue_wait_seconds"  # deployment: stored -> picked up
IN_FLIGHT = "switchyard_requests_in_flight"  # deployment (this process)
SECRET_CACHE = "switchyard_secret_cache_total"  # result: hit, miss, error
# deployment: 1 while this model-proxy does not pull it, its provider key unfetchable here
KEY_PAUSED = "switchyard_modelproxy_key_paused"
USAGE_EVENTS = "switchyard_usage_events_total"  # result: published, dropped
# result: stored, failed (translated Responses answers' items kept for item_reference)
RESPONSE_ITEMS = "switchyard_response_items_total"
# Requests whose caller left (llm.v1.cancel). A counter of its own, and no provider error: a
# client leaving is no provider failure, and the error ratios and their alerts must not rise
# with it. The duration histograms time such a request under error_type CALLER_LEFT, so the
# latency of successes (error_type "") leaves it out.
CANCELLED = "switchyard_cancelled_requests_total"  # deployment, stage: queued, serving
# reason: no_request_id, invalid_header, no_proof (a message on llm.v1.cancel that is none)
CANCELS_REFUSED = "switchyard_cancels_refused_total"
CALLER_LEFT = "cancelled"
STAGE = "stage"
RESULT = "result"
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Secrets service.
VAULT_REQUESTS = "switchyard_vault_requests_total"  # op, result: ok, error
OP = "op"

# Accounting.
SPEND = "switchyard_spend_usd_total"  # alias
USAGE_APPLIED = "switchyard_usage_batches_total"  # result: applied, retried, unreadable
USAGE_LOST = "switchyard_usage_batches_lost_total"  # removed from USAGE before applied
# Control: accounting's backlog, read from its consumer (control/usage_lag.py).
USAGE_WAITING = "switchyard_usage_waiting"  # usage batches stored, not yet applied
USAGE_STALLED = "switchyard_usage_stalled_seconds"  # batches waited with none applied

# Gateway: client keys near their budget, counted over every key (never a per-key label).
KEYS_WITH_BUDGET = "switchyard_keys_with_budget"  # usable keys that have a budget
KEYS_NEAR_BUDGET = "switchyard_keys_near_budget"  # threshold: share of the budget spent
THRESHOLD = "threshold"
BUDGET_THRESHOLDS: tuple[float, ...] = (0.8, 1.0)  # label values "0.8" and "1"
# When the budget watch last read every budgeted key's spend and wrote the spent marks due
# (unix seconds; 0 before the first), and how often it means to (admin.budget_watch_s).
BUDGET_WATCH_LAST_SCAN = "switchyard_budget_watch_last_scan_timestamp_seconds"
BUDGET_WATCH_INTERVAL = "switchyard_budget_watch_interval_seconds"
BUDGET_WATCH_COMPLETED_SCANS = "switchyard_budget_watch_completed_scans"

# Control: queue depth per deployment, collected once for the platform (from JetStream).
QUEUE_WAITING = "switchyard_queue_waiting"  # requests stored, not yet picked up
# What streams.dispatch_queue_limit counts: waiting in dispatch (not held in HOLD) + in flight.
QUEUE_IN_DISPATCH = "switchyard_queue_in_dispatch"
QUEUE_IN_FLIGHT = "switchyard_queue_in_flight"  # picked up, not yet acknowledged
QUEUE_CONCURRENCY = "switchyard_queue_concurrency"  # the deployment's max in flight
QUEUE_LIMIT = "switchyard_queue_limit"  # the most it may hold before refusing (queue_full)
QUEUE_REDELIVERED = "switchyard_queue_redelivered"  # delivered more than once, not yet acked
QUEUE_OLDEST_AGE = "switchyard_queue_oldest_age_seconds"  # age of the oldest waiting request
QUEUE_ACKED = "switchyard_queue_acked_total"  # requests the deployment finished (ack floor)
PROCESS_UP = "switchyard_process_up"  # component, instance: 1 while it reports in
# component: live processes of it newer (wire-protocol level) than a live process they rely on.
UPGRADE_ORDER_VIOLATIONS = "switchyard_upgrade_order_violations"
# Control's feeder: fair queueing of saturated deployments.
QUEUE_HELD = "switchyard_queue_held"  # deployment, priority, tenant: waiting in HOLD
QUEUE_IN_HOLD = "switchyard_queue_in_hold"  # deployment: what streams.hold_total_limit counts
QUEUE_HOLD_LIMIT = "switchyard_queue_hold_limit"  # deployment: streams.hold_total_limit
# deployment: the fullest tenant queue (one tenant, one priority) and its bound.
QUEUE_HOLD_TENANT_MAX = "switchyard_queue_hold_tenant_max"
QUEUE_HOLD_TENANT_LIMIT = "switchyard_queue_hold_tenant_limit"  # streams.hold_tenant_limit
DEPLOYMENT_SATURATED = "switchyard_deployment_saturated"  # deployment: 1 while requests held
FAIR_MOVES = "switchyard_fair_moves_total"  # deployment, priority: moved HOLD -> dispatch
# deployment, priority: deadline passed in HOLD, answered 504 (once) by the feeder.
HELD_EXPIRED = "switchyard_held_expired_total"
PRIORITY = "priority"  # interactive, default, batch
# A team name (admins create teams, so the set is bounded); keys without a team share
# NO_TEAM: a label never carries a key id.
TENANT = "tenant"
NO_TEAM = "_no_team"
# The batch runner.
BATCH_LINES = "switchyard_batch_lines_total"  # result: completed, failed
BATCHES = "switchyard_batches"  # status: batches the runner knows in that status
BATCH_RUNNER_LEASE_HELD = "switchyard_batch_runner_lease_held"  # 1: this runner runs batches
COMPONENT = "component"
INSTANCE = "instance"

# Every process.
NATS_RECONNECTS = "switchyard_nats_reconnects_total"
TRACE_SPANS = "switchyard_trace_spans_total"  # result: exported, failed, dropped
# Not-after of a certificate this process presents or meets (alert: SwitchyardCertificateExpiring)
TLS_CERT_EXPIRY = "switchyard_tls_certificate_expiry_timestamp_seconds"
IDENTITY = "identity"  # the process's own NATS identity, or "server" (nats-server's)
BUILD_INFO = "switchyard_build_info"  # version, component
VERSION = "version"
