"""Browser sessions of the admin web app, kept in the gateway's memory.

Signing in with the admin token creates a session: a random id in an ``HttpOnly``,
``SameSite=Strict`` cookie (``Secure`` over TLS) and a CSRF token for its forms. The store
keeps only the SHA-256 of each id. Sessions end after 8 hours without a request, 24 hours after
sign-in, at sign-out, or when the gateway restarts (everyone signs in again); with several
gateway replicas a load balancer must keep a browser on one replica (sticky sessions).

A page's open live stream is use, as a request is (:meth:`Session.seen`): an admin watching
the overview for hours was signed out at the next click, while the stream ran on past the
idle limit. Both now follow one rule, and :meth:`Session.over` applies the idle limit too.
A page streams only while it is in view (``live.js`` closes the stream when the page is
hidden and opens it when shown): a page left open behind other tabs kept its session alive
until the absolute limit.

The Sessions page and ``/admin/v1/sessions`` list them and end every one of a kind (the
admin token's or the read-only one's): on the gateway replica that answers only, since each
keeps its own (:mod:`switchyard.admin.session_list`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "sy_session"
IDLE_S = 8 * 3600.0
ABSOLUTE_S = 24 * 3600.0
MAX_SESSIONS = 10_000  # sessions of the admin token; past it the least recently used ends
# Sessions of the read-only token, capped on their own: its sign-ins only ever end another
# read-only session, never an admin's (one cap for both let a read-only token holder sign in
# 10,000 times and sign every idle admin out).
MAX_READ_ONLY_SESSIONS = 1_000


@dataclass
class Session:
    """One signed-in browser. ``actor`` is the name given at sign-in, for the audit log;
    ``read_only``: signed in with the read-only admin token (pages, no changes)."""

    actor: str
    source: str
    read_only: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text), shown once
    stash: dict[str, Any] = field(default_factory=dict)  # e.g. a previewed import
    ended: bool = False  # signed out or expired: open streams stop
    ends_at: float = float("inf")  # the absolute expiry (set by the store)
    idle_s: float = IDLE_S  # ended this long after the last use (set by the store)

    def over(self) -> bool:
        """Ended, past its absolute expiry or idle too long (an open stream checks this as
        it goes)."""
        now = time.time()
        return self.ended or now >= self.ends_at or now - self.last_seen > self.idle_s

    def seen(self) -> None:
        """In use now: a request, or a live stream still open on one of its pages."""
        self.last_seen = time.time()

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(
        self,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        max_sessions: int = MAX_SESSIONS,
        max_read_only: int = MAX_READ_ONLY_SESSIONS,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle = idle_s
        self._absolute = absolute_s
        self._max = {False: max_sessions, True: max_read_only}  # by ``read_only``

    def create(self, actor: str, source: str, read_only: bool = False) -> tuple[str, Session]:
        """A new session; returns its id (for the cookie, never stored) and the session."""
        self._sweep()
        alike = [d for d, s in self._sessions.items() if s.read_only == read_only]
        if len(alike) >= self._max[read_only]:  # drop the least recently used of its kind
            oldest = min(alike, key=lambda d: self._sessions[d].last_seen)
            self._sessions.pop(oldest).ended = True  # its open streams stop too
        session_id = secrets.token_urlsafe(32)
        session = Session(actor=actor, source=source, read_only=read_only)
        session.ends_at = session.created + self._absolute
        session.idle_s = self._idle
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, refreshed; None when unknown or expired."""
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.over():
            del self._sessions[digest]
            session.ended = True
            return None
        session.seen()
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            session = self._sessions.pop(_digest(session_id), None)
            if session is not None:
                session.ended = True

    def live(self) -> list[Session]:
        """Every session not ended or expired, oldest sign-in first."""
        self._sweep()
        return sorted(self._sessions.values(), key=lambda s: s.created)

    def end_all(self, read_only: bool) -> int:
        """Ends every session of one kind (``read_only``: the read-only token's, else the
        admin token's); their open streams stop too. Returns how many were live."""
        self._sweep()
        ended = [d for d, s in self._sessions.items() if s.read_only == read_only]
        for digest in ended:
            self._sessions.pop(digest).ended = True
        return len(ended)

    def _sweep(self) -> None:
        expired = [d for d, s in self._sessions.items() if s.over()]
        for digest in expired:
            self._sessions.pop(digest).ended = True  # its open streams stop too
