"""Form bodies in, field errors out: the same validation as the API, shown at the field.

Bodies are ``application/x-www-form-urlencoded`` (the pages post nothing else), parsed here
without a multipart dependency, and read with a cap (:data:`MAX_FORM_BYTES`, a pasted LiteLLM
config included; :data:`SIGNIN_FORM_BYTES` for the sign-in form, which anyone may post): a
longer body is refused with 413 before more of it is read. Errors from msgspec
(``... - at `$.deployments[0].weight```) and from the API's ``param``
(``routes.<alias>.fallbacks[0]``) become form field names (``deployments-0-weight``,
``fallbacks``), so the message appears beside the input at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.requests import Request

from switchyard.runtime.request_body import read_body

MAX_FORM_BYTES = 1024 * 1024
SIGNIN_FORM_BYTES = 16 * 1024  # a name, the admin token and where to go next
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


class Form:
    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    @classmethod
    async def read(cls, request: Request, limit: int = MAX_FORM_BYTES) -> Form:
        """The posted form.

        Raises:
            PayloadTooLarge: the body is longer than ``limit`` bytes.
        """
        body = await read_body(request, limit)
        return cls(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def raw(self, name: str) -> str:
        """The value as typed (not stripped: a caller that wants its ends off says so)."""
        values = self._fields.get(name)
        return values[0] if values else ""

    def has(self, name: str) -> bool:
        return name in self._fields

    def names(self) -> list[str]:
        return list(self._fields)


def field_name(path: str) -> str:
    """``deployments[0].weight`` -> ``deployments-0-weight``."""
    return re.sub(r"\[(\d+)\]", r"-\1", path).replace(".", "-").strip("-")


def place(path: str | None, known: Iterable[str], prefix: str = "") -> str:
    """The form field a problem at ``path`` belongs to: the deepest known one, else ``""``
    (the whole form). ``prefix`` is cut first (``routes.<alias>.`` for a route form)."""
    if not path:
        return ""
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :]
    name = field_name(path)
    fields = set(known)
    parts = name.split("-")
    while parts:
        candidate = "-".join(parts)
        if candidate in fields:
            return candidate
        parts.pop()
    return ""


def split_validation(message: str) -> tuple[str, str]:
    """A msgspec validation message as (problem, path without ``$.``)."""
    match = _AT.match(message)
    if not match:
        return message, ""
    return match.group("msg"), (match.group("path") or "").lstrip(".")
