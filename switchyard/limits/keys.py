"""Redis key names. Role ACLs match these prefixes (see stack/valkey.py): ingress writes
``sy:rl:*`` and only reads ``sy:spend:*``; accounting writes ``sy:spend:*`` and ``sy:usage:*``."""

from __future__ import annotations

# Spend is kept in integer nano-dollars (1e-9 USD): sums stay exact, to the cent and far below.
NANO = 1_000_000_000
DAILY_TTL_S = 90 * 86400


def requests(key_id: str) -> str:
    """The log of admitted requests (RPM and TPM windows)."""
    return f"sy:rl:{key_id}:log"


def tpm_tokens(key_id: str) -> str:
    return f"sy:rl:{key_id}:tpm:n"


def parallel(key_id: str) -> str:
    return f"sy:rl:{key_id}:par"


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


def day_rank(day: str, kind: str) -> str:
    """A day's members of ``kind`` (key, team, model) ranked by cost: the spend page's order."""
    return f"sy:spend:day:{day}:rank:{kind}"


# The team name of keys that have none, in day-team counters and rankings.
NO_TEAM = "(none)"


def seen(batch_id: str) -> str:
    """A usage batch already applied."""
    return f"sy:usage:seen:{batch_id}"


# How long an applied usage event is remembered. Two executions of one request (a failover
# re-send, a redelivery) finish within the longer one's run time of each other, and accounting
# applies events in stream order, so this only has to outlast the longest generation. The
# cost: one key per request in this window (~90 bytes; 100 req/s ~ 8 MB).
ONCE_TTL_S = 15 * 60


def once(event_id: str) -> str:
    """A usage event (request and deployment hop) already billed."""
    return f"sy:usage:once:{event_id}"
