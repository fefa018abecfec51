"""The ``Origin`` field of a request head refused before it was read (:mod:`.protocol`).

The edge refuses a head as soon as it breaks a rule: bytes the parser rejects (400), more
bytes than ``ingress.max_header_bytes`` (431). A browser's ``Origin`` field often comes after
the field that broke it (a large ``Cookie``), and when the rest of the head had not arrived
yet the answer carried no CORS headers: the page saw "Failed to fetch", not the error. So,
with ``ingress.cors_origins`` set and the request's path one of the LLM API's, the edge reads
on, for that field only: nothing else is parsed, and no more than ``budget`` bytes (the head's
own limit again) until the head's time (``header_timeout_s``) is up. It answers as soon as the
field, or the head's end, arrives, or either limit is reached.
"""

from __future__ import annotations

import re
from typing import Any

# One whole ``Origin`` field line, found in the raw bytes of a head (its ``\r\n`` on both sides);
# its value is stripped of spaces and tabs by :func:`origin_values`, not by the pattern: a lazy
# value between two runs of optional spaces backtracks in cubic time on a line of spaces with no
# end (2,000 of them took 5 s), and these are a client's bytes. This pattern is linear.
ORIGIN_LINE = re.compile(rb"\r\n[Oo][Rr][Ii][Gg][Ii][Nn]:([^\r\n]*)\r\n")
LINE_KEPT = 2048  # the longest field line in progress kept between reads: enough for an Origin


class OriginSeek:
    """A refused head's answer, waiting for the head's ``Origin`` field."""

    __slots__ = ("_carry", "budget", "message", "scope", "status")

    def __init__(
        self, status: int, message: str, scope: dict[str, Any], budget: int, read: bytes
    ) -> None:
        """``scope``: the head's path and the fields parsed before it was refused; ``read``:
        the last bytes read of it (a field line in progress is kept from them)."""
        self.status = status
        self.message = message
        self.scope = scope
        self.budget = budget
        self._carry = _line_in_progress(read)

    def feed(self, data: bytes) -> bool:
        """Reads ``data``, the head's next bytes; True once the answer is due (the field
        found, the head ended, or the budget spent)."""
        self.budget -= len(data)
        read = self._carry + data
        found = origin_values(read)
        if found:
            self.scope = {**self.scope, "headers": [*self.scope["headers"], (b"origin", found[0])]}
            return True
        self._carry = _line_in_progress(read)
        return b"\r\n\r\n" in read or self.budget <= 0


def origin_values(read: bytes) -> list[bytes]:
    """The values of the whole ``Origin`` field lines in ``read``, without surrounding spaces
    and tabs."""
    return [value.strip(b" \t") for value in ORIGIN_LINE.findall(read)]


def _line_in_progress(read: bytes) -> bytes:
    """The bytes of ``read`` from its last line break on (an ``Origin`` line may go on in the
    next read), or its last byte (a ``\\r`` whose ``\\n`` follows) when that is too long."""
    start = read.rfind(b"\r\n")
    if start >= 0 and len(read) - start <= LINE_KEPT:
        return read[start:]
    return read[-1:]
