"""The checks a client key's settings pass before a create or an update writes them: only
known fields, numbers and periods that make sense, priority classes, free text without
control characters and within its length, a team not shaped like a key id.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import Any

from switchyard.admin.key_rules import TEAM_HINT, hint, number_problem, team_problem
from switchyard.errors import InputError
from switchyard.limits import periods
from switchyard.schemas.keys import MAX_MODELS, MAX_TEXT_CHARS
from switchyard.schemas.scheduling import RANK

# The fields an admin may set on a key.
MUTABLE = frozenset(
    {
        "name",
        "owner",
        "team",
        "models",
        "rpm",
        "tpm",
        "max_parallel",
        "budget_usd",
        "budget_period",
        "expires_at",
        "disabled",
        "weight",
        "priority",
        "max_priority",
    }
)


def validated(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - MUTABLE)
    if unknown:
        raise InputError(
            unknown[0], "not a key setting", f"use one of: {', '.join(sorted(MUTABLE))}"
        )
    out = clean_text({k: v for k, v in fields.items() if v is not None})
    period = out.get("budget_period")
    if period is not None and not periods.valid(str(period)):
        raise InputError(
            "budget_period",
            f"`{period}` is not a budget period",
            "use daily, weekly, monthly, total, or a number of seconds",
        )
    for field, value in out.items():
        problem = number_problem(field, value)
        if problem is not None:
            raise InputError(field, problem, hint(field))
    for field in ("priority", "max_priority"):
        if field in out and out[field] not in RANK:
            raise InputError(
                field,
                f"`{out[field]}` is not a priority class",
                "use interactive, default or batch",
            )
    if "models" in out and isinstance(out["models"], str):
        out["models"] = tuple(m.strip() for m in out["models"].split(",") if m.strip())
    if "models" in out and isinstance(out["models"], Iterable):
        out["models"] = tuple(out["models"])
    if out.get("models") == ():  # a key allowed no model could not make a single request
        raise InputError(
            "models",
            "the list of models is empty",
            'name at least one alias (wildcards work: gpt-*), or ["*"] for every model; to '
            "stop a key, revoke it",
        )
    expires = out.get("expires_at")
    if isinstance(expires, int | float) and 0 < expires <= time.time():
        raise InputError(
            "expires_at",
            "that time has already passed: the key would be expired when written",
            "give a later time (seconds since 1970), leave it out for a key that does not "
            "expire, or revoke the key to stop it now",
        )
    check_lengths(out)
    return out


def clean_text(fields: dict[str, Any]) -> dict[str, Any]:
    """``name``, ``owner`` and ``team`` without surrounding whitespace, and refused when a
    name is left empty or any holds a control character: the one rule for the API, the web
    app and the CLI (which all write through :class:`KeyAdmin`).

    ``keys create ""`` made a nameless key, the API took a name of spaces, and keys made from
    a CRLF file kept the ``\r`` in their name and team (a team of its own in spend). A line
    break or escape inside one would also garble every listing and log line showing it.
    """
    for field in ("name", "owner", "team"):
        value = fields.get(field)
        if not isinstance(value, str):
            continue
        value = value.strip()
        odd = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
        if odd is not None:
            raise InputError(
                field,
                f"{field} holds a control character (U+{ord(odd):04X})",
                "use printable text: no line breaks, tabs or escape sequences",
            )
        if field == "name" and not value:
            raise InputError("name", "a key needs a name", "give it a name people will know it by")
        fields[field] = value
    return fields


def check_team(fields: dict[str, Any], current: str) -> None:
    """Refuse a team shaped like a key id (:func:`team_problem`) where one is set; a record
    that already has it (written before the rule) keeps it through other changes."""
    team = fields.get("team")
    problem = team_problem(team) if team != current else None
    if problem is not None:
        raise InputError("team", problem, TEAM_HINT)


def check_lengths(fields: dict[str, Any]) -> None:
    """Free text within :data:`MAX_TEXT_CHARS` (a name of megabytes made every listing and
    audit page that size, and past NATS's message size the write failed with a 500)."""
    for field in ("name", "owner", "team"):
        value = fields.get(field)
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise InputError(
                field,
                f"{field} is {len(value):,} characters long; at most {MAX_TEXT_CHARS} are allowed",
                "shorten it",
            )
    models = fields.get("models")
    if isinstance(models, tuple):
        if len(models) > MAX_MODELS:
            raise InputError(
                "models",
                f"{len(models):,} model patterns; at most {MAX_MODELS} are allowed",
                "use wildcards (`gpt-*`, `*`) for families of models",
            )
        longest = max((len(str(m)) for m in models), default=0)
        if longest > MAX_TEXT_CHARS:
            raise InputError(
                "models",
                f"a model pattern is {longest:,} characters long; at most {MAX_TEXT_CHARS} "
                "are allowed",
                "shorten it",
            )
