"""How far accounting is behind: usage batches stored in ``USAGE`` and not yet applied.

Spend, budgets and the spend metric move only when accounting applies usage batches. A stopped
or stuck accounting (every worker down, Valkey refusing its writes) froze them with nothing to
say so but ``switchyard_process_up``, while requests kept flowing and keys kept spending past
their budgets. Control reads the ``accounting`` consumer once per collection (one JetStream
request) and exports:

* ``switchyard_usage_waiting``: batches stored and not yet applied (waiting, or being applied);
* ``switchyard_usage_stalled_seconds``: how long batches have waited with none applied, 0 while
  accounting keeps up. Control measures it itself, from when batches started waiting or when
  accounting's ack floor last moved, whichever is later: it needs no clock but its own, and it
  counts a worker that takes batches and never finishes one (a Valkey outage) as stalled too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.control.jsapi import CONSUMER
from switchyard.errors import BusError
from switchyard.runtime import semconv as sc
from switchyard.runtime.definitions import ACCOUNTING_CONSUMER
from switchyard.runtime.metrics import Metrics

INFO_SUBJECT = f"$JS.API.CONSUMER.INFO.{subjects.USAGE_STREAM}.{ACCOUNTING_CONSUMER}"


class UsageLag:
    """Accounting's backlog, read by control (see the module docstring)."""

    def __init__(self, nc: NATS, metrics: Metrics, clock: Callable[[], float] = time.time):
        self._nc = nc
        self._clock = clock
        self.waiting: int | None = None  # None until the first read
        self._floor = -1
        self._since: float | None = None  # batches wait with none applied since then
        metrics.gauge_callback(
            sc.USAGE_WAITING,
            "Usage batches stored and not yet applied by accounting (waiting or being applied).",
            [],
            lambda: [] if self.waiting is None else [((), float(self.waiting))],
        )
        metrics.gauge_callback(
            sc.USAGE_STALLED,
            "Seconds usage batches have waited with none applied by accounting (0 while it "
            "keeps up): spend and budgets are frozen meanwhile.",
            [],
            lambda: [] if self.waiting is None else [((), self.stalled_s())],
        )

    async def collect(self) -> None:
        """Read the accounting consumer now.

        Raises:
            BusError: JetStream answered with an error (no such consumer, no leader).
        """
        msg = await self._nc.request(INFO_SUBJECT, b"", timeout=2)
        info = CONSUMER.decode(msg.data)
        if info.error is not None:
            raise BusError(f"JetStream: {info.error.description or info.error.code}")
        self.observe(info.num_pending + info.num_ack_pending, info.ack_floor.stream_seq)

    def observe(self, waiting: int, floor: int) -> None:
        """``waiting`` batches not applied, accounting's ack floor at stream sequence ``floor``."""
        if waiting <= 0:
            self._since = None
        elif self._since is None or floor != self._floor:
            self._since = self._clock()
        self._floor = floor
        self.waiting = max(0, waiting)

    def stalled_s(self) -> float:
        if self._since is None:
            return 0.0
        return round(max(0.0, self._clock() - self._since), 3)
