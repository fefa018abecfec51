"""Who sent a request across an account import, from the header the server writes.

nats-server stamps ``Nats-Request-Info`` on requests that cross a service import (with the
requesting user's DN when the import has ``share: true``) and overwrites any value a client
sends, so this is the one identity a CLIENT-zone caller cannot forge.
"""

from __future__ import annotations

import msgspec

from switchyard.bus import headers as h


class RequestInfo(msgspec.Struct, frozen=True):
    acc: str = ""
    user: str = ""


_INFO = msgspec.json.Decoder(RequestInfo)


def caller_identity(headers: dict[str, str] | None) -> str:
    """The CN of the requesting user, or "" when the request did not cross an import."""
    raw = (headers or {}).get(h.REQUEST_INFO)
    if not raw:
        return ""
    try:
        user = _INFO.decode(raw).user
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return ""
    for part in user.split(","):
        if part.startswith("CN="):
            return part[3:]
    return ""
