"""A caller's answers to model-proxies' probes (docs/nats-api.md, "A caller that goes away").

An answer is an empty message to the probe's reply subject. A NATS config rendered before
``allow_responses`` (docs/operations.md, "Upgrading") makes every answer a permissions
violation: an -ERR and an error-callback line every few seconds per request. The server's
refusal names the subject, so the first one seen about an answer sent here stops the answers
for good, with one log line.
"""

from __future__ import annotations

import collections
import contextlib
import logging

from nats.aio.client import Client as NATS

log = logging.getLogger("switchyard.client")

KEPT = 64  # the last answer subjects kept, to recognise the server's refusal of one
# nats-py's words for the server's -ERR, lower-cased (the subject in it too).
_REFUSED = "permissions violation for publish to"


class ProbeAnswers:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.answering = True
        self._sent: collections.deque[str] = collections.deque(maxlen=KEPT)

    async def answer(self, subject: str) -> None:
        """Answer the probe whose reply subject is ``subject``, unless an answer was refused."""
        if not self.answering:
            return
        err = str(self._nc.last_error or "").lower()
        if _REFUSED in err and any(f'"{sent.lower()}"' in err for sent in self._sent):
            self.answering = False
            log.warning(
                "this connection may not answer model-proxies' probes (a NATS config rendered "
                "before allow_responses?): probes are no longer answered"
            )
            return
        self._sent.append(subject)
        with contextlib.suppress(Exception):  # a closed connection: nobody to tell
            await self._nc.publish(subject, b"")
