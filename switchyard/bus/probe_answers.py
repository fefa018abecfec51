"""A caller's answers to model-proxies' probes (docs/nats-api.md, "A caller that goes away").

An answer is an empty message to the probe's reply subject. A NATS config rendered before
``allow_responses`` (docs/operations.md, "Upgrading") makes every answer a permissions
violation (an -ERR): the first seen about an answer sent here is said once in the log. The
answers go on all the same: a client that stopped answering for good after one refusal (a
reconnect to a server not yet given the new config, in a rolling reload) would have its
requests in flight taken for gone once it is back on a server that takes them; and a caller
that has never answered is probed twice per request only, so a refused client costs two
-ERRs per request.

A part's acknowledgement (:mod:`switchyard.bus.part_acks`) is such an answer: refused, it
leaves the model-proxy waiting for it, and the request ends 499 ``caller_gone``. So once a
refusal is seen the client stops announcing that it acknowledges parts, and its answers in
parts come back-to-back, as to an older caller; until its connection reconnects (maybe to a
server given the new config) or :data:`RETRY_S` passed (a config reloaded in place does not
reconnect it): then it announces them again, and stops again if refused again. Before, one
refusal (a reconnect to a server not yet reloaded, in a rolling reload) turned flow control
off for the life of the process.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time

from nats.aio.client import Client as NATS

log = logging.getLogger("switchyard.client")

KEPT = 64  # the last answer subjects kept, to recognise the server's refusal of one
# nats-py's words for the server's -ERR, lower-cased (the subject in it too).
_REFUSED = "permissions violation for publish to"
RETRY_S = 600.0  # a refusal is believed this long, without a reconnect


class ProbeAnswers:
    def __init__(self, nc: NATS, *, retry_s: float = RETRY_S) -> None:
        self._nc = nc
        self.refused = False  # an answer was refused (said once per refusal seen)
        self._sent: collections.deque[str] = collections.deque(maxlen=KEPT)
        self._retry_s = retry_s
        self._seen: BaseException | None = None  # the refusal counted (nc.last_error)
        self._at = 0.0  # when it was (monotonic)...
        self._reconnects = 0  # ...and the connection's reconnect count then

    def seen_refused(self) -> bool:
        """Whether the server refused an answer sent here (said when first seen), since the
        last reconnect and within :data:`RETRY_S`. An answer to a part's acknowledgement
        request is one too: a caller refused them stops announcing ``Sy-Parts-Ack``
        (:meth:`switchyard.client.LLMClient.envelope`) for that long."""
        nc = self._nc
        if self.refused and (
            nc.stats["reconnects"] != self._reconnects
            or time.monotonic() - self._at >= self._retry_s
        ):
            self.refused = False  # another server, or a config reloaded: tried again
            # Refusals of answers sent while refused are forgotten with it: only a later
            # error is a new one (else the last of them turned parts acks off again at once).
            self._seen = nc.last_error
        err = nc.last_error
        if not self.refused and err is not None and err is not self._seen:
            text = str(err).lower()
            if _REFUSED in text and any(f'"{sent.lower()}"' in text for sent in self._sent):
                self.refused = True
                self._seen = err
                self._at = time.monotonic()
                self._reconnects = nc.stats["reconnects"]
                log.warning(
                    "the NATS server refused an answer to a model-proxy's probe or part (a NATS "
                    "config rendered before allow_responses?): a crash of this process is not "
                    "noticed by the model-proxies, and answers in parts come without flow "
                    "control, until a reconnect or for %g s (then tried again)",
                    self._retry_s,
                )
        return self.refused

    async def answer(self, subject: str) -> None:
        """Answer the probe (or part) whose reply subject is ``subject``."""
        self.seen_refused()
        self._sent.append(subject)
        with contextlib.suppress(Exception):  # a closed connection: nobody to tell
            await self._nc.publish(subject, b"")
