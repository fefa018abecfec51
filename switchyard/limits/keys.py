"""Redis key names. Role ACLs match these prefixes (see stack/valkey.py): ingress writes
``sy:rl:*`` and only reads ``sy:spend:*``; accounting writes ``sy:spend:*`` and ``sy:usage:*``.
So the estimated costs per request accounting learns (``sy:spend:est:*``) are read by the
ingress, and the holds the ingress takes on them (``sy:rl:<key>:hold``) are its own."""

from __future__ import annotations

# Spend is kept in integer nano-dollars (1e-9 USD): sums stay exact, to the cent and far below.
NANO = 1_000_000_000
# Daily aggregates (per key, team, model, deployment, key-and-model, and each day's rankings)
# are kept this many days: the longest period a spend report can cover.
DAILY_KEPT_DAYS = 90
DAILY_TTL_S = DAILY_KEPT_DAYS * 86400


def requests(key_id: str) -> str:
    """The log of admitted requests (RPM and TPM windows)."""
    return f"sy:rl:{key_id}:log"


def tpm_tokens(key_id: str) -> str:
    return f"sy:rl:{key_id}:tpm:n"


def parallel(key_id: str) -> str:
    return f"sy:rl:{key_id}:par"


def holds(key_id: str) -> str:
    """Budget holds of the key's requests in flight: member -> estimated nano-USD, and ``_sum``."""
    return f"sy:rl:{key_id}:hold"


# How long an estimated cost per request outlives the key's (or model's) last billed request.
ESTIMATE_TTL_S = 7 * 86400


def estimates(key_id: str) -> str:
    """The key's estimated cost of one request (nano-USD), by model alias (hash fields)."""
    return f"sy:spend:est:key:{key_id}"


def platform_estimates() -> str:
    """The platform's estimated cost of one request (nano-USD), by model alias: what a key
    that never used the model holds."""
    return "sy:spend:est:all"


def budget(key_id: str, period_id: str) -> str:
    return f"sy:spend:key:{key_id}:p:{period_id}"


def total(key_id: str) -> str:
    return f"sy:spend:key:{key_id}:total"


def day_key(day: str, key_id: str) -> str:
    return f"sy:spend:day:{day}:key:{key_id}"


def day_model(day: str, alias: str) -> str:
    return f"sy:spend:day:{day}:model:{alias}"


def day_key_model(day: str, key_id: str, alias: str) -> str:
    return f"sy:spend:day:{day}:keymodel:{key_id}:{alias}"


def day_team(day: str, team: str) -> str:
    return f"sy:spend:day:{day}:team:{team or NO_TEAM}"


def day_deployment(day: str, deployment: str) -> str:
    """A deployment's day (the provider account and model that served, whichever alias asked):
    the counters of the other day hashes, plus its ``provider`` and ``model`` as the usage
    events named them, so a deployment removed from the route table still says what it was."""
    return f"sy:spend:day:{day}:deployment:{deployment}"


def day_rank(day: str, kind: str) -> str:
    """A day's members of ``kind`` (key, team, model, deployment) ranked by cost: the spend
    page's order."""
    return f"sy:spend:day:{day}:rank:{kind}"


# The team name of keys that have none, in day-team counters and rankings.
NO_TEAM = "(none)"


def seen(batch_id: str) -> str:
    """A usage batch applied by an earlier version, which kept one key per batch for two weeks.

    Nothing writes these any more (see :func:`applied`); after an upgrade they expire on their
    own within those two weeks. Kept so the name stays documented (and ACL tests can use it).
    """
    return f"sy:usage:seen:{batch_id}"


# Usage batches already applied, one bit per USAGE stream sequence (a redelivery is the same
# stream message: the bit says it was applied). The bits are cut into chunks of 2**20
# messages (128 KiB of bits) so that old chunks expire on their own; each chunk key names the
# stream instance by its creation time, since a recreated stream numbers from 1 again and must
# not inherit the old stream's bits. Measured in Valkey: 0.13-0.25 MB per million batches (a
# growing string may hold up to twice its length), where the per-batch keys that came before
# cost 100 MB (see docs/keys-and-limits.md).
APPLIED_CHUNK_BITS = 20
# A chunk outlives the messages it covers (see applied_ttl_s); with a stream without a
# max_age, it is kept as long as the daily spend it protects.
APPLIED_MARGIN_S = 86400
APPLIED_NO_MAX_AGE_S = DAILY_TTL_S


def applied(stream_created_us: int, chunk: int) -> str:
    """The bits of one chunk of USAGE stream sequences: set once a message was applied."""
    return f"sy:usage:applied:{stream_created_us}:{chunk}"


def applied_slot(stream_seq: int) -> tuple[int, int]:
    """The chunk of a USAGE stream sequence and its bit in that chunk's key."""
    return stream_seq >> APPLIED_CHUNK_BITS, stream_seq & ((1 << APPLIED_CHUNK_BITS) - 1)


def applied_ttl_s(stream_max_age_s: float) -> int:
    """How long a chunk is kept after its last write.

    A message can be delivered (again) only while the stream holds it, at most its max age
    after it was stored; every message of a chunk was stored before the chunk's last write (its
    own application at the latest). So a chunk kept for the max age after its last write
    outlives every message it covers, however long accounting was away; the margin covers the
    stream's lazy expiry and clocks that differ between NATS and Valkey.
    """
    age = int(stream_max_age_s) if stream_max_age_s > 0 else APPLIED_NO_MAX_AGE_S
    return age + APPLIED_MARGIN_S


# How long an applied usage event is remembered. Two executions of one request (a failover
# re-send, a redelivery) finish within the longer one's run time of each other, and accounting
# applies events in stream order, so this only has to outlast the longest generation. The
# cost: one key per request in this window (~90 bytes; 100 req/s ~ 8 MB).
ONCE_TTL_S = 15 * 60


def once(event_id: str) -> str:
    """A usage event (request and deployment hop) already billed."""
    return f"sy:usage:once:{event_id}"
