"""Request bodies shared by the management API and the web app, and key-store errors in API
terms: both validate input the same way, so a form shows the error the API would return.

A number JSON cannot carry (``1e309``, or the ``Infinity`` and ``NaN`` some encoders write) is
refused naming the field, and a key setting out of its range with the rule it breaks
(:mod:`switchyard.admin.key_rules`), never with the decoder's own wording."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from switchyard.admin.key_damage import KeyRecordDamaged
from switchyard.admin.key_rules import NUMBER_RULES
from switchyard.admin.keys import KeyNotFound
from switchyard.config.loader import LITERAL_KEY_FIELDS
from switchyard.errors import ConfigError, Conflict, InvalidRequest, NotFound
from switchyard.schemas.bad_json import not_json
from switchyard.schemas.fields import enum_hint
from switchyard.schemas.keys import MAX_BUDGET_USD, MAX_EXPIRES_AT, MAX_LIMIT
from switchyard.schemas.secrets import ProviderLabel, SecretValue

T = TypeVar("T")
_Limit = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>.*)`$", re.S)
_NESTING = 64  # how deep a body is searched for a number JSON cannot carry


class KeyFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settable key fields (None: leave as is). Numbers within the ranges of
    :data:`~switchyard.admin.key_rules.NUMBER_RULES`, which also word their refusals."""

    RULES: ClassVar[Mapping[str, str]] = {
        field: f"{rule.rule} ({rule.hint})" for field, rule in NUMBER_RULES.items()
    }

    name: str | None = None
    owner: str | None = None
    team: str | None = None
    models: list[str] | None = None
    rpm: _Limit | None = None
    tpm: _Limit | None = None
    max_parallel: _Limit | None = None
    budget_usd: Annotated[float, msgspec.Meta(ge=0, le=MAX_BUDGET_USD)] | None = None
    budget_period: str | None = None
    expires_at: Annotated[float, msgspec.Meta(ge=0, le=MAX_EXPIRES_AT)] | None = None
    disabled: bool | None = None
    weight: Annotated[float, msgspec.Meta(gt=0, le=1000)] | None = None
    priority: str | None = None
    max_priority: str | None = None

    def changes(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not None}


# What clears a key setting, said when a PATCH sends null for it.
_CLEARED_BY = {
    "owner": '""',
    "team": '""',
    "models": '["*"] (every model)',
    "rpm": "0 (no limit)",
    "tpm": "0 (no limit)",
    "max_parallel": "0 (no limit)",
    "budget_usd": "0 (no budget)",
    "expires_at": "0 (never expires)",
}


def key_patch(body: bytes) -> dict[str, Any]:
    """A key PATCH's changes, with null refused naming the field. Null read as "leave as
    is" (as an absent field), so a script clearing a team or an expiry the JSON Merge Patch
    way (``{"team": null}``) got a 200 with the key unchanged."""
    changes = decode(body, KeyFields, "key").changes()
    doc = msgspec.json.decode(body)  # (it decoded as KeyFields: an object)
    for field, value in doc.items():
        if value is None:
            how = _CLEARED_BY.get(field)
            clear = f"give {how} to clear it" if how else "give a value to change it"
            raise InvalidRequest(
                f"`{field}` is null: leave it out to keep the key's {field}, or {clear}",
                param=field,
            )
    return changes


class SecretBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounded as the secrets service bounds them, so an overlong one is a 400 here."""

    value: SecretValue
    provider: ProviderLabel = ""

    def __repr__(self) -> str:
        return f"SecretBody(provider={self.provider!r}, value='***')"


async def key_call(call: Awaitable[T]) -> T:
    """Key store errors in API terms: unknown id 404, a record that cannot be read 409
    (revoke or delete it), invalid field 400."""
    try:
        return await call
    except KeyNotFound as exc:
        raise NotFound(exc.problem, param="key_id") from None
    except KeyRecordDamaged as exc:
        raise Conflict(exc.problem, param="key_id") from None
    except ConfigError as exc:
        raise InvalidRequest(f"{exc.problem} ({exc.hint})", param=exc.field) from None


def decode(body: bytes, kind: type[T], what: str) -> T:
    """``body`` as ``kind``, or a 400 naming what it was meant to be."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise refusal(exc, kind, what, body) from None


def refusal(exc: Exception, kind: type[Any], what: str, body: bytes = b"") -> InvalidRequest:
    """The 400 for a ``kind`` that did not decode (from ``body``, when given) or convert.

    A number JSON cannot carry is named with its path; a field ``kind`` words a rule for
    (its ``RULES``) gets that rule; anything else the decoder's message.
    """
    rules: Mapping[str, str] = getattr(kind, "RULES", {})
    message, path = _split(str(exc))
    endless = _endless(body) if body else None
    if endless is None and isinstance(exc, RecursionError):
        return InvalidRequest("request body is nested too deeply", code="invalid_json")
    if (
        endless is None
        and isinstance(exc, msgspec.DecodeError)
        and not isinstance(exc, msgspec.ValidationError)
    ):  # no JSON at all: "invalid key: Input data was truncated" read as a bad API key
        return not_json(str(exc), body)  # (a lone surrogate is named as such)
    if endless is not None:
        path = endless
        message = (
            rules.get(path) or f"`{path}` must be a finite number (JSON has no infinity or NaN)"
        )
    elif unknown := _UNKNOWN.match(message):  # param: the field itself, wherever it is
        return _unknown_field(kind, what, path, unknown.group("field"))
    elif path in rules:
        message = rules[path]
    elif path:  # the field the decoder names: as param too, where the SDKs and the UI look
        listed = enum_hint(message, kind, path)  # `Invalid enum value 'x'`: which are valid
        message = f"{message}; {listed}" if listed else message
        return InvalidRequest(f"invalid {what}: `{path}`: {message}", param=path)
    else:
        return InvalidRequest(f"invalid {what}: {exc}")
    return InvalidRequest(message, param=path)


def _unknown_field(kind: type[Any], what: str, path: str, field: str) -> InvalidRequest:
    """A field ``kind`` (at ``path`` in it) does not have, named in ``param`` with its path;
    one at the top with the fields there are. It had no ``param`` at the top (a script sending
    a key's record back as a PATCH was told "Object contains unknown field `id`", nothing
    more), and the object holding it below (``deployments[0]`` for a misspelt weight)."""
    where = f"{path}.{field}" if path else field
    taken = getattr(kind, "__struct_fields__", ()) if not path else ()
    listed = f" (it takes {', '.join(taken)})" if taken else ""
    return InvalidRequest(f"invalid {what}: unknown field `{where}`{listed}", param=where)


def _split(message: str) -> tuple[str, str]:
    """A msgspec message as (problem, path without ``$.``)."""
    match = _AT.match(message)
    if match is None:
        return message, ""
    return match.group("msg"), match.group("path") or ""


def _endless(body: bytes) -> str | None:
    """The path of the first number in ``body`` that is not finite (``1e309``, and the
    ``Infinity``/``NaN`` Python's own encoder writes), read with the standard library's
    parser, which takes them; None when there is none or the body is no JSON at all."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _find_endless(doc, "", 0)


def _find_endless(value: Any, path: str, depth: int) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if depth >= _NESTING:
        return None
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = [
            (f"{path}.{k}" if path else str(k), v) for k, v in value.items()
        ]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for where, item in items:
        found = _find_endless(item, where, depth + 1)
        if found is not None:
            return found
    return None


def positive_int(value: str, param: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidRequest(f"`{param}` must be a positive whole number", param=param)
    return number


def whole_number(value: str, param: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InvalidRequest(f"`{param}` must be a whole number", param=param)
    return number


def refuse_literal_keys(body: bytes, name: str = "") -> None:
    """A provider document with a key in it gets a 400 that says what to do instead."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return  # the typed decode reports it
    if not isinstance(doc, dict):
        return
    if name:
        providers = [doc]
    else:  # any other shape is the typed decode's to report
        table = doc.get("table")
        found = table.get("providers") if isinstance(table, dict) else None
        providers = list(found.values()) if isinstance(found, dict) else []
    for provider in providers:
        if isinstance(provider, dict):
            for field in LITERAL_KEY_FIELDS:
                if field in provider:
                    raise InvalidRequest(
                        "provider keys never go in the route table; store the key with "
                        "PUT /admin/v1/secrets/<name> and set `secret: <name>` instead",
                        param=field,
                    )
