"""Words and checks for the messages a head cannot route as they came: a reroute whose headers
break the contract, a message without a reply subject."""

from __future__ import annotations

import re
from collections.abc import Mapping

from switchyard.bus import headers as h
from switchyard.bus import replies

_SUBJECT = re.compile(r"[^\s*>]+")
_MAX_REPLY = 256


def reply_target(headers: Mapping[str, str]) -> str | None:
    """The ``Sy-Reply`` of a message whose other headers could not be read, when it is usable
    as a subject to answer on (non-empty, at most 256 characters, no blank or wildcard)."""
    reply = headers.get(h.REPLY, "")
    if not reply or len(reply) > _MAX_REPLY or not _SUBJECT.fullmatch(reply):
        return None
    return reply


_KINDS = frozenset(kind.value for kind in replies.ReplyKind)


def kind_said(headers: Mapping[str, str]) -> str:
    """What a message's ``Sy-Kind`` says it is, for a log line (``an error message``), whole:
    the value comes from outside, so one that is no reply kind is described, not quoted (a
    cut of it read "a message withou")."""
    kind = headers.get(h.KIND)
    if kind is None:
        return "a message without Sy-Kind"
    if kind not in _KINDS:
        return "a message with an unknown Sy-Kind"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} message"
