"""A provider key that comes back inside a successful answer is masked before it is sent on.

Errors were always redacted (:func:`switchyard.schemas.secret.redact`); a successful answer
went on as the provider sent it, so a broken or hostile upstream (a proxy that echoes its
request, a self-hosted server logging into its output) could hand the operator's provider key
to any tenant. The whole key is searched for in each answer or chunk (a substring search: a
few microseconds for a usual answer) and replaced with ``***``; keys shorter than
:data:`MIN_KEY_CHARS` are not searched for (no real provider key is that short, and masking a
short common string would corrupt answers). Pieces of a key are not searched for here.
"""

from __future__ import annotations

import logging

from switchyard.runtime.throttle import Throttle
from switchyard.schemas.secret import Secret

log = logging.getLogger("switchyard.modelproxy")

MIN_KEY_CHARS = 16
MASK = b"***"


def needle(key: Secret | None) -> bytes:
    """What to search answers for: the key's value, or b"" for none (no key, a short one)."""
    value = key.reveal() if key is not None else ""
    return value.encode() if len(value) >= MIN_KEY_CHARS else b""


class EchoedKeys:
    """Masks provider keys in answers; says so in the log at most once per 10 s."""

    def __init__(self) -> None:
        self._warn = Throttle(10.0)

    def masked(self, payload: bytes, key: bytes, provider: str) -> bytes:
        """``payload`` with every copy of ``key`` (from :func:`needle`) replaced by ``***``
        (logged: the provider sent its own key back, which the operator should know of)."""
        if not key or key not in payload:
            return payload
        if self._warn.ready():
            log.warning("provider %s sent its API key back in an answer: masked", provider)
        return payload.replace(key, MASK)
