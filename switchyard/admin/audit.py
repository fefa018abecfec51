"""The audit log for people: the ``AUDIT`` stream followed live, searched and paged in memory.

Every gateway follows the stream with an ordered consumer from the newest ``keep`` entries, so
the Audit page and ``GET /admin/v1/audit`` filter and page without a round trip per request,
and an entry written by any replica (or the CLI) shows up everywhere within milliseconds.
Older entries stay in the stream (a year, a million entries) for ``nats stream view AUDIT``.

An entry's own ``ts`` is whatever its writer put there: every holder of the admin
certificate (each gateway, each CLI operator) may append any entry, with any actor, source
and time. So each entry is shown and ordered by the time JetStream stored it (the server's
clock, newest first: the stream's order), and one whose ``ts`` is more than :data:`SKEW_S`
away from that is flagged (:attr:`AuditRow.ts_mismatch`): back-dated, or written by a host
whose clock is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from switchyard.bus import subjects
from switchyard.bus.flow_control import quiet_flow_control
from switchyard.schemas.audit import DECODER, AuditEntry

log = logging.getLogger("switchyard.admin.audit")

# Entries searchable in memory: ~60 MB of the gateway at the most (an explorer measured ~560
# bytes for an entry with a short detail; a long detail costs its length more).
KEEP = 100_000
MAX_PAGE = 500
# How far an entry's own `ts` may be from the time the stream stored it before it is flagged:
# a writer stamps `ts` just before it publishes, so more than this is a wrong clock or a
# back-dated entry.
SKEW_S = 60.0
_LATEST_TS = 253_402_300_799.0  # 9999-12-31: the last second a date can show


@dataclass(frozen=True)
class AuditQuery:
    """A filter: ``q`` matches actor, target and detail (case-insensitive); the others exactly."""

    q: str = ""
    kind: str = ""  # key, secret, route, provider, deployment, session, import...
    via: str = ""
    offset: int = 0
    limit: int = 50
    # A cursor: only entries older than the one with this sequence (the ``last_seq`` of the
    # page before). 0 is no cursor (a request without ``after``): from the newest; a request's
    # ``after`` is a positive sequence (``after=0`` is a 400, queries.audit_query). Entries
    # appended while a script pages get higher sequences, so they never shift a later page
    # as they shift ``offset``.
    after: int = 0


@dataclass(frozen=True)
class AuditRow:
    """An entry as the stream holds it: its sequence and the server's time of storing it."""

    seq: int
    entry: AuditEntry
    stored: float  # unix seconds, JetStream's (the server's clock), not the writer's

    @property
    def ts_mismatch(self) -> bool:
        """Whether the entry's own ``ts`` is more than :data:`SKEW_S` from ``stored``."""
        ts = self.entry.ts
        return not math.isfinite(ts) or abs(ts - self.stored) > SKEW_S

    @property
    def claimed(self) -> float | None:
        """The writer's ``ts`` when it is a time a date can show (None: not one)."""
        ts = self.entry.ts
        return ts if math.isfinite(ts) and 0 < ts <= _LATEST_TS else None

    def doc(self) -> dict[str, Any]:
        """``GET /admin/v1/audit``'s entry: the stored fields (``ts`` as written), ``seq``,
        ``stored`` and ``ts_mismatch``."""
        return {
            "seq": self.seq,
            **msgspec.to_builtins(self.entry),
            "stored": self.stored,
            "ts_mismatch": self.ts_mismatch,
        }


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditRow]  # newest first: in the stream's order, which is the stored time's
    total: int  # entries matching the filter
    kinds: list[str]  # every kind seen, for the filter menu
    more: bool = False  # whether entries matching the filter follow this page
    # Whether the stream holds entries older than the ones held here (``oldest_seq`` the first
    # held): no page, ``total`` nor ``more`` counts them (``nats stream view AUDIT`` shows them).
    truncated: bool = False
    oldest_seq: int | None = None


class AuditLog:
    def __init__(self, nc: NATS, keep: int = KEEP) -> None:
        self._js = nc.jetstream(timeout=10)
        self._entries: deque[tuple[AuditRow, str]] = deque(maxlen=keep)
        self._keep = keep
        self._sub: object | None = None
        self._kinds: set[str] = set()
        self._caught_up = asyncio.Event()
        self._last = 0
        self._older = False  # the stream holds entries before the oldest one held

    async def start(self, timeout: float = 15.0) -> None:
        try:
            info = await self._js.stream_info(subjects.AUDIT_STREAM)
        except NotFoundError:
            log.error("no %s stream: run `switchyard provision`", subjects.AUDIT_STREAM)
            return
        self._last = info.state.last_seq
        start = max(1, self._last - self._keep + 1, info.state.first_seq)
        self._older = info.state.messages > 0 and start > info.state.first_seq
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        if info.state.messages == 0:
            config = ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW)
            self._caught_up.set()
        self._sub = await self._js.subscribe(
            subjects.AUDIT_ALL,
            stream=subjects.AUDIT_STREAM,
            ordered_consumer=True,
            config=config,
            cb=self._on_msg,
        )
        quiet_flow_control(self._sub)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def _on_msg(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            entry = DECODER.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("skipped unreadable audit entry %d", seq)
        else:
            text = f"{entry.actor}\n{entry.target}\n{entry.detail}\n{entry.action}".lower()
            stored = msg.metadata.timestamp.timestamp()  # when the stream stored it
            if len(self._entries) == self._keep:  # the oldest held is dropped (still stored)
                self._older = True
            self._entries.append((AuditRow(seq, entry, stored), text))
            self._kinds.add(entry.kind)
        if seq >= self._last or msg.metadata.num_pending == 0:
            self._caught_up.set()

    async def stop(self) -> None:
        """Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()  # type: ignore[attr-defined]

    def query(self, query: AuditQuery) -> AuditPage:
        limit = max(1, min(query.limit, MAX_PAGE))
        matches: list[AuditRow] = []
        total = 0
        keep = _matcher(query)
        placed = 0  # matches past the cursor (all of them without one)
        for row, text in reversed(self._entries):
            if not keep(row.entry, text):
                continue
            total += 1
            if query.after and row.seq >= query.after:
                continue
            if query.offset <= placed < query.offset + limit:
                matches.append(row)
            placed += 1
        more = placed > query.offset + limit
        oldest = self._entries[0][0].seq if self._entries else None
        return AuditPage(matches, total, sorted(self._kinds), more, self._older, oldest)

    def matching(self, query: AuditQuery) -> Iterator[AuditRow]:
        """Every entry ``query`` filters in (its offset and limit aside), oldest first: the
        entries held when it is called (later ones are not taken; nothing is skipped)."""
        keep = _matcher(query)
        held = list(self._entries)  # the follower appends while a reader is paused
        return (row for row, text in held if keep(row.entry, text))


def _matcher(query: AuditQuery) -> Callable[[AuditEntry, str], bool]:
    """Whether an entry (and its lowered search text) passes ``query``'s filters."""
    needle = query.q.strip().lower()

    def keep(entry: AuditEntry, text: str) -> bool:
        if query.kind and entry.kind != query.kind:
            return False
        if query.via and entry.via != query.via:
            return False
        return not needle or needle in text

    return keep
