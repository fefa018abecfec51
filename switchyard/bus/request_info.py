"""Who sent a request across an account import, from the header the server writes.

nats-server stamps ``Nats-Request-Info`` on requests that cross a service import (with the
requesting user's DN when the import has ``share: true``) and overwrites any value a client
sends, so this is the one identity a CLIENT-zone caller cannot forge.
"""

from __future__ import annotations

import msgspec

from switchyard.bus import headers as h
from switchyard.bus.identities import Zone


class RequestInfo(msgspec.Struct, frozen=True):
    acc: str = ""
    user: str = ""


_INFO = msgspec.json.Decoder(RequestInfo)


def caller_identity(headers: dict[str, str] | None) -> str:
    """The CN of the requesting CLIENT-zone user, or "" when the request did not cross an
    import or came from another account. Services trust some CLIENT identities by name (an
    edge vouches for the key it authenticated); a user of another account (an internal
    client, in INTERNAL) is never one of them, whatever its certificate's CN."""
    raw = (headers or {}).get(h.REQUEST_INFO)
    if not raw:
        return ""
    try:
        info = _INFO.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return ""
    if info.acc != Zone.CLIENT.value:
        return ""
    for part in info.user.split(","):
        if part.startswith("CN="):
            return part[3:]
    return ""
