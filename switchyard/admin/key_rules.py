"""What each numeric client key setting takes, and which team names a key may not have (a
key id's shape, the placeholders of keys without a team), in words a form, the API and the
CLI show.

Checked where keys are written (:func:`switchyard.admin.keys.KeyAdmin.create` and ``update``),
so every path (web form, API, command line) refuses the same values with the same sentence;
the record's own types (:mod:`switchyard.schemas.keys`) only insist on finite numbers, so a
record written before these bounds still reads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from switchyard.limits.keys import NO_TEAM
from switchyard.runtime import semconv as sc
from switchyard.schemas.keys import KEY_ID, MAX_BUDGET_USD, MAX_EXPIRES_AT, MAX_LIMIT
from switchyard.schemas.numbers import finite


class NumberRule(NamedTuple):
    """What one numeric key setting takes: ``low`` to ``high`` (``low`` itself only when
    ``from_low``), whole numbers only when ``whole``; the rule in words, and a hint."""

    low: float
    high: float
    whole: bool
    from_low: bool
    rule: str
    hint: str


_NO_LIMIT = "use 0 for no limit"
NUMBER_RULES: dict[str, NumberRule] = {
    "rpm": NumberRule(
        0, MAX_LIMIT, whole=True, from_low=True, hint=_NO_LIMIT,
        rule="rpm must be a whole number of requests a minute, 0 or more",
    ),
    "tpm": NumberRule(
        0, MAX_LIMIT, whole=True, from_low=True, hint=_NO_LIMIT,
        rule="tpm must be a whole number of tokens a minute, 0 or more",
    ),
    "max_parallel": NumberRule(
        0, MAX_LIMIT, whole=True, from_low=True, hint=_NO_LIMIT,
        rule="max_parallel must be a whole number of requests at once, 0 or more",
    ),
    "budget_usd": NumberRule(
        0, MAX_BUDGET_USD, whole=False, from_low=True,
        rule="budget must be a finite number of dollars, 0 or more",
        hint=f"use 0 for no budget; at most {MAX_BUDGET_USD:,}",
    ),
    "expires_at": NumberRule(
        0, MAX_EXPIRES_AT, whole=False, from_low=True,
        rule="expires_at must be a finite number of unix seconds, 0 or more",
        hint=f"use 0 for never; at most {MAX_EXPIRES_AT} (the end of year 9999)",
    ),
    "weight": NumberRule(
        0, 1000, whole=False, from_low=False,
        rule="weight must be a finite number above 0",
        hint="at most 1000; 1 is an ordinary share",
    ),
}  # fmt: skip


def number_problem(field: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the numeric setting ``field`` (see
    :data:`NUMBER_RULES`), or None when it takes it (or ``field`` is not numeric)."""
    rule = NUMBER_RULES.get(field)
    if rule is None:
        return None
    if not finite(value) or (rule.whole and not isinstance(value, int)):
        return rule.rule
    above = value >= rule.low if rule.from_low else value > rule.low
    if not above:
        return rule.rule
    if value > rule.high:
        return f"{rule.rule}, and at most {rule.high:,}"
    return None


def rule_text(field: str) -> str:
    """The rule of a numeric setting with its hint, as one sentence for a form."""
    rule = NUMBER_RULES[field]
    text = f"{rule.rule} ({rule.hint})."
    return text[:1].upper() + text[1:]


def hint(field: str) -> str:
    """The hint of a numeric setting's rule (how to give a valid value)."""
    rule = NUMBER_RULES.get(field)
    return rule.hint if rule is not None else "see `switchyard keys create --help`"


def team_problem(team: Any) -> str | None:
    """What is wrong with ``team`` as a key's team, or None when it may have it.

    A key without a team is its own tenant under its id (``fair_tenant``): the owner of its
    Batch API files and batches, and its share of a saturated deployment. A team spelled like
    a key id (``key_`` and 16 hex digits, in any case or padding) would share that key's name
    space, so its keys would see and use the other key's files and batches. Records written
    before this rule keep their team (files and batches are stored under it).
    """
    if isinstance(team, str) and KEY_ID.match(team.strip().lower()):
        return (
            f"team `{team}` has the shape of a key id: a key without a team owns its files, "
            "batches and fair share under its id, so this team would share them"
        )
    if isinstance(team, str) and team.strip().lower() in NO_TEAM_NAMES:
        return (
            f"team `{team}` is how spend and metrics name keys without a team, so its keys' "
            "spend would be merged with theirs"
        )
    return None


# How keys without a team are named: in spend (day counters and rankings) and in metrics'
# tenant label. A team spelled so (in any case or padding) would be counted with them.
NO_TEAM_NAMES = frozenset({NO_TEAM, sc.NO_TEAM})

TEAM_HINT = (
    "choose another team name: not `key_` followed by 16 hex digits, "
    f"nor {' or '.join(f'`{n}`' for n in sorted(NO_TEAM_NAMES))}; leave it empty for no team"
)
