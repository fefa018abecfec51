"""Request bodies shared by the management API and the web app, and key-store errors in API
terms: both validate input the same way, so a form shows the error the API would return."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec

from switchyard.admin.keys import KeyNotFound
from switchyard.config.loader import LITERAL_KEY_FIELDS
from switchyard.errors import ConfigError, InvalidRequest, NotFound
from switchyard.schemas.secrets import ProviderLabel, SecretValue

T = TypeVar("T")


class KeyFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settable key fields (None: leave as is)."""

    name: str | None = None
    owner: str | None = None
    team: str | None = None
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    disabled: bool | None = None
    weight: float | None = None
    priority: str | None = None
    max_priority: str | None = None

    def changes(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not None}


class SecretBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounded as the secrets service bounds them, so an overlong one is a 400 here."""

    value: SecretValue
    provider: ProviderLabel = ""

    def __repr__(self) -> str:
        return f"SecretBody(provider={self.provider!r}, value='***')"


async def key_call(call: Awaitable[T]) -> T:
    """Key store errors in API terms: unknown id 404, invalid field 400."""
    try:
        return await call
    except KeyNotFound as exc:
        raise NotFound(exc.problem, param="key_id") from None
    except ConfigError as exc:
        raise InvalidRequest(f"{exc.problem} ({exc.hint})", param=exc.field) from None


def decode(body: bytes, kind: type[T], what: str) -> T:
    """``body`` as ``kind``, or a 400 naming what it was meant to be."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"invalid {what}: {exc}") from None


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
