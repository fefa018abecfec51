"""Request bodies shared by the management API and the web app, and key-store errors in API
terms: both validate input the same way, so a form shows the error the API would return."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec

from switchyard.admin.keys import KeyNotFound
from switchyard.errors import ConfigError, InvalidRequest, NotFound

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
    value: str
    provider: str = ""

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
