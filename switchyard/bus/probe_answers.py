"""A caller's answers to model-proxies' probes (docs/nats-api.md, "A caller that goes away").

An answer is an empty message to the probe's reply subject. A NATS config rendered before
``allow_responses`` (docs/operations.md, "Upgrading") makes every answer a permissions
violation (an -ERR): the first seen about an answer sent here is said once in the log. The
answers go on all the same: a client that stopped answering for good after one refusal (a
reconnect to a server not yet given the new config, in a rolling reload) would have its
requests in flight taken for gone once it is back on a server that takes them; and a caller
that has never answered is probed twice per request only, so a refused client costs two
-ERRs per request.
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
        self.refused = False  # an answer was refused (said once)
        self._sent: collections.deque[str] = collections.deque(maxlen=KEPT)

    async def answer(self, subject: str) -> None:
        """Answer the probe whose reply subject is ``subject``."""
        if not self.refused:
            err = str(self._nc.last_error or "").lower()
            if _REFUSED in err and any(f'"{sent.lower()}"' in err for sent in self._sent):
                self.refused = True
                log.warning(
                    "the NATS server refused an answer to a model-proxy's probe (a NATS config "
                    "rendered before allow_responses?): a crash of this process is not noticed "
                    "by the model-proxies until it is rendered again"
                )
        self._sent.append(subject)
        with contextlib.suppress(Exception):  # a closed connection: nobody to tell
            await self._nc.publish(subject, b"")
