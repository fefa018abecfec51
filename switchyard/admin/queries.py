"""The query parameters of the management API: which each endpoint takes, and how they read.

A parameter an endpoint does not take is refused (400 naming it), as an unknown body field is:
ignored, a script's ``GET /admin/v1/keys?owner=alice@x`` listed every key, and the script
that revoked what it listed would have revoked everyone's. A parameter given twice is refused
too (which one counted was the framework's choice, not the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import QueryParams

from switchyard.admin.audit import MAX_PAGE as AUDIT_PAGE
from switchyard.admin.audit import AuditQuery
from switchyard.admin.bodies import positive_int, whole_number
from switchyard.admin.key_index import MAX_PAGE as KEY_PAGE
from switchyard.errors import InvalidRequest
from switchyard.limits.keys import DAILY_KEPT_DAYS
from switchyard.schemas.keys import KEY_ID

KEY_STATES = ("active", "revoked", "expired")
SPEND_RANKINGS = ("key", "team", "model", "deployment")

# The query parameters each endpoint takes, by handler name; an endpoint not listed takes none.
QUERY_PARAMS: dict[str, tuple[str, ...]] = {
    "list_keys": ("q", "state", "owner", "team", "name", "after", "offset", "limit"),
    "deployment_history": ("seconds",),
    "daily_spend": ("days", "per_day"),
    "spend_ranking": ("by", "days", "offset", "limit", "key"),
    "audit": ("q", "kind", "via", "after", "offset", "limit"),
    "export_audit": ("q", "kind", "via"),
    "delete_secret": ("force",),
}


RANKING_PAGE = 500


def page_limit(q: QueryParams, most: int) -> int:
    """A list's ``limit`` (50 when absent): 1 to ``most``. More was answered with ``most`` and
    no word of it, so a script asking for 1,000 that stopped at a page shorter than it asked
    for stopped after 500, short of the rest."""
    asked = positive_int(q.get("limit") or "50", "limit")
    if asked > most:
        raise InvalidRequest(
            f"`limit` is at most {most} (asked for {asked}); for more, read the next page "
            "(`offset`; `after` where a page gives a `last_id` or `last_seq`)",
            param="limit",
        )
    return asked


def check_params(query: QueryParams, allowed: tuple[str, ...]) -> None:
    """Refuse a parameter not in ``allowed``, or one given more than once (400 naming it)."""
    unknown = sorted({name for name in query if name not in allowed})
    if unknown:
        names = ", ".join(f"`{name}`" for name in unknown)
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise InvalidRequest(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}: {takes}",
            param=unknown[0],
            code="unknown_parameter",
        )
    repeated = sorted({name for name in query if len(query.getlist(name)) > 1})
    if repeated:
        raise InvalidRequest(
            f"query parameter `{repeated[0]}` is given more than once; give it once",
            param=repeated[0],
            code="unknown_parameter",  # as the docs say: one code for a query it does not take
        )


@dataclass(frozen=True)
class KeyQuery:
    """``GET /keys``: ``q`` searches (a substring of id, name, owner, team or last four
    characters); ``owner``, ``team`` and ``name`` match the whole value (``owner`` letter
    case aside); ``after``
    is the id of the last key of the page before (a cursor: see :meth:`KeyIndex.search`)."""

    q: str
    state: str
    owner: str
    team: str
    offset: int
    limit: int
    after: str = ""
    name: str = ""


def key_query(q: QueryParams) -> KeyQuery:
    state = q.get("state", "")
    if state and state not in KEY_STATES:
        raise InvalidRequest(
            f"`state` must be one of {', '.join(KEY_STATES)} (or absent for every key)",
            param="state",
        )
    return KeyQuery(
        q=q.get("q", ""),
        state=state,
        owner=_exact(q, "owner"),
        team=_exact(q, "team"),
        offset=whole_number(q.get("offset") or "0", "offset"),
        limit=page_limit(q, KEY_PAGE),
        after=_key_id(q, "after"),
        name=_exact(q, "name"),
    )


def _key_id(q: QueryParams, param: str) -> str:
    """A key id parameter's value ("" when absent), refused unless shaped like one."""
    value = q.get(param)
    if value is None:
        return ""
    if not KEY_ID.match(value):
        raise InvalidRequest(
            f"`{param}` must be a key id (`key_` and 16 hex digits), as GET /keys lists them",
            param=param,
        )
    return value


def _exact(q: QueryParams, param: str) -> str:
    """An exact filter's value; given empty, refused: a script whose variable was unset must
    not get every key back."""
    value = q.get(param)
    if value is None:
        return ""
    if not value.strip():
        raise InvalidRequest(
            f"`{param}` is empty: give the {param} to match, or leave it out for every key",
            param=param,
        )
    return value.strip()


@dataclass(frozen=True)
class RankingQuery:
    """``GET /spend/ranking``; with ``key`` (and ``by=model``), the models of one key."""

    by: str
    days: int
    offset: int
    limit: int
    key: str


def ranking_query(q: QueryParams) -> RankingQuery:
    kind = q.get("by") or "key"
    if kind not in SPEND_RANKINGS:
        raise InvalidRequest("`by` must be key, team, model or deployment", param="by")
    key = q.get("key")
    if key is not None and not KEY_ID.match(key):
        raise InvalidRequest(
            "`key` must be a key id (`key_` and 16 hex digits), as GET /keys lists them",
            param="key",
        )
    if key is not None and kind != "model":
        raise InvalidRequest("`key` ranks one key's models: give it with `by=model`", param="key")
    return RankingQuery(
        by=kind,
        days=spend_days(q),
        offset=whole_number(q.get("offset") or "0", "offset"),
        limit=page_limit(q, RANKING_PAGE),
        key=key or "",
    )


def spend_days(q: QueryParams) -> int:
    """A spend report's ``days`` (7 when absent): 1 to :data:`DAILY_KEPT_DAYS`. A longer
    period was answered with 90 days and no word of it, so a year's total was a quarter's."""
    days = positive_int(q.get("days") or "7", "days")
    if days > DAILY_KEPT_DAYS:
        raise InvalidRequest(
            f"`days` is at most {DAILY_KEPT_DAYS}: daily spend is kept {DAILY_KEPT_DAYS} days "
            f"(asked for {days}); for longer, keep the exports of earlier periods",
            param="days",
        )
    return days


PER_DAY_MAX = 1000


def per_day(q: QueryParams) -> int:
    """A daily spend report's ``per_day`` (100 when absent): 1 to :data:`PER_DAY_MAX`. More was
    answered with the top 1,000 a day and no word of it, so a report of every key missed some."""
    asked = positive_int(q.get("per_day") or "100", "per_day")
    if asked > PER_DAY_MAX:
        raise InvalidRequest(
            f"`per_day` is at most {PER_DAY_MAX} (asked for {asked}); for every key, page "
            "through GET /admin/v1/spend/ranking (offset, limit) or export the web app's "
            "Spend page as CSV",
            param="per_day",
        )
    return asked


def audit_query(q: QueryParams) -> AuditQuery:
    return AuditQuery(
        q=q.get("q", ""),
        kind=q.get("kind", ""),
        via=q.get("via", ""),
        offset=whole_number(q.get("offset") or "0", "offset"),
        limit=page_limit(q, AUDIT_PAGE),
        after=positive_int(q["after"], "after") if "after" in q else 0,
    )
