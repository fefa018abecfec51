"""Live messages on ``llm.v1.cancel``: heard (:meth:`.cancels.Cancels.hear`), and one that
cancels nothing is never dropped without a word.

A cancel with ``Sy-Deadline`` in seconds, a garbage value, a header spelled in another case
(``sy-cancel-proof``) or no proof used to change nothing, silently: the caller thought its
request cancelled while it ran on. Now such a message is counted
(``switchyard_cancels_refused_total{reason}``), logged at most every 10 s (with what was wrong,
never a header's value: a proof, or a key in ``Authorization``, stays out of the log), and, if
it names a reply subject, answered with the 400 ``invalid_header`` a request with the same
headers would get.

Every model-proxy hears every cancel (the one serving its request acts on it), so each used to
count, log and answer one that cancels nothing: with N model-proxies it was counted N times
and answered N times. The refusal is now the business of a second subscription in the queue
group :data:`~switchyard.bus.subjects.CANCEL_CHECKS_QUEUE`, which NATS hands each message to
one model-proxy of: that one counts, logs and answers it; the others let it be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import replies
from switchyard.runtime.throttle import Throttle
from switchyard.workers.modelproxy.cancels import Cancels, NoCancel, read_cancel

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class CancelIntake:
    """The subscriber of ``llm.v1.cancel``: hands each message to ``cancels``
    (:meth:`on_cancel`); and, as one of the queue group that checks them (:meth:`on_check`),
    counts (``count(reason)``), logs and answers one that is no cancel."""

    def __init__(
        self,
        nc: NATS,
        cancels: Cancels,
        count: Callable[[str], None],
        *,
        throttle: Throttle | None = None,
    ) -> None:
        self._nc = nc
        self._cancels = cancels
        self._count = count
        self._log = throttle if throttle is not None else Throttle(LOG_EVERY_S)
        self._refused = 0  # since the last line logged

    async def on_cancel(self, msg: Msg) -> None:
        """Every cancel: acted on here (one that is no cancel changes nothing, and is the
        business of :meth:`on_check`, on one model-proxy)."""
        self._cancels.hear(msg.headers)

    async def on_check(self, msg: Msg) -> None:
        """A message NATS gave this model-proxy alone of the queue group: counted, logged
        and answered if it cancels nothing."""
        refused = read_cancel(msg.headers)
        if not isinstance(refused, NoCancel):
            return
        self._count(refused.reason)
        self._refused += 1
        if self._log.ready():
            log.warning(
                "%d messages on %s cancelled nothing since the last such line (the latest: "
                "%s, %s; %s)",
                self._refused,
                msg.subject,
                refused.reason,
                refused.message,
                "answered with a 400" if msg.reply else "no reply subject to answer",
            )
            self._refused = 0
        if msg.reply:
            await replies.send_error(self._nc, msg.reply, refused)
