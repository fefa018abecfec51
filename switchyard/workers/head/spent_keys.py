"""The head's view of the keys whose budget is used up: the ``sy_key_spent`` bucket, followed
live into memory, so a request is checked without a round trip (``limits.spent_marks``).

Every request the head routes is checked, whoever sent it: an internal client over the NATS
API (which no edge checks: the reason for the marks), and the edges and the batch runner too,
which checked the key's spend before sending and so are refused here only in the moments the
two views differ (the answer is the same 429 either way).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.keys import ClientKey

log = logging.getLogger("switchyard.head")


class SpentKeys:
    def __init__(self, js: JetStreamContext) -> None:
        self._marks: dict[str, SpentMark] = {}  # key id -> mark
        self._follower = KvFollower(js, subjects.KEY_SPENT_BUCKET, self._on_entry)

    def _on_entry(self, name: str, value: bytes | None, revision: int) -> None:
        if value is None:
            self._marks.pop(name, None)
            return
        try:
            mark = spent_marks.decode(value)
        except spent_marks.READ_ERRORS:
            self._marks.pop(name, None)
            log.warning("ignored an unreadable spent mark (revision %d)", revision)
            return
        self._marks[mark.key_id] = mark

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def check(self, key: ClientKey) -> None:
        """Raises: RateLimited: 429 ``budget_exceeded``, ``key``'s budget is used up."""
        refused = spent_marks.refusal(self._marks.get(key.id), key)
        if refused is not None:
            raise refused
