"""Bounds on the admin plane's long reads, counted per token role: audit exports and live
streams held open at once.

Each audit export copies the gateway's in-memory audit view (up to 100,000 entries) and
encodes every row on the gateway's event loop, and each live stream (``GET /admin/v1/stream``,
the web app's live pages) asks the control service for the overview once a second on its own.
Without a bound the read-only token, which may read everything, could open as many as it
liked and load the gateway and the control service for everyone. Now at most
:data:`EXPORTS_AT_ONCE` exports and :data:`STREAMS_AT_ONCE` streams run at once per token role
(the admin token's and the read-only one's are counted apart, so one never crowds out the
other); past that the call is refused with 429 ``too_many_concurrent_requests`` (OpenAI-shaped,
``Retry-After``) and nothing is read. A slot is given back when the response ends, however it
ends (finished, or the client went away).

A live stream's slot is also given back when one of its writes has not completed within
:data:`SEND_TIMEOUT_S` (the client reads nothing: the socket's buffers are full), and the
stream then ends. A laptop closed with a live page open leaves a half-open connection that
the server learns of only when TCP gives up, about 15 minutes later: it held its slot all that
while, and the page, woken, took a new one; 50 such pages and every live page of the role was
refused. (A write into buffers with room completes at once: a stream of one small event a
second fills them only after a while, so the slot comes back then, not at once.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from switchyard.admin.token import Role
from switchyard.errors import RateLimited

EXPORT = "audit export"
STREAM = "live stream"
EXPORTS_AT_ONCE = 2  # per token role
STREAMS_AT_ONCE = 50  # per token role: a team's open overview and queue pages
RETRY_AFTER_S = {EXPORT: 10.0, STREAM: 30.0}
CODE = "too_many_concurrent_requests"
SEND_TIMEOUT_S = 5.0  # a live stream's write not completed by then: its slot is given back
ROLE_STATE = "admin_role"  # request.state's attribute: the role authorize() found


class ReadSlots:
    """How many exports and streams each token role holds open now (one per gateway)."""

    def __init__(self, exports: int = EXPORTS_AT_ONCE, streams: int = STREAMS_AT_ONCE) -> None:
        self._limits = {EXPORT: exports, STREAM: streams}
        self._held: Counter[tuple[str, Role]] = Counter()

    def hold(self, kind: str, role: Role) -> Callable[[], None]:
        """Take a slot of ``kind`` for ``role``; returns what gives it back (once, however
        often called). Raises 429 when ``role`` holds every slot of that kind."""
        key = (kind, role)
        limit = self._limits[kind]
        if self._held[key] >= limit:
            raise RateLimited(
                f"{limit} {kind}s are already open with the {role.value} admin token, the most "
                f"it may hold at once; try again when one has ended",
                code=CODE,
                retry_after=RETRY_AFTER_S[kind],
            )
        self._held[key] += 1
        given_back = False

        def release() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._held[key] -= 1

        return release

    def held(self, kind: str, role: Role) -> int:
        return self._held[(kind, role)]


class _Stalled(Exception):
    """A write of the stream did not complete in time (the client reads nothing)."""


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back when it ends, however it ends; with
    ``send_timeout_s``, also when a write has not completed within that many seconds (the
    stream then sends nothing more, and ends once that write is done or the server drops
    the connection: its own write timeout bounds a reader that never reads)."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        release: Callable[[], None],
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
        send_timeout_s: float | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self._send_timeout_s is None:
                await super().__call__(scope, receive, send)
                return
            try:
                await super().__call__(scope, receive, self._in_time(send, self._send_timeout_s))
            except _Stalled:  # the slot is back; end the answer if the client is still there
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._release()

    def _in_time(self, send: Send, timeout_s: float) -> Send:
        async def send_in_time(message: Message) -> None:
            write = asyncio.ensure_future(send(message))
            done, _ = await asyncio.wait({write}, timeout=timeout_s)
            if not done:
                self._release()  # a slot for a client that reads nothing is given back now
                await write  # (not cancelled: a write cut in half would garble the stream)
                raise _Stalled
            write.result()

        return send_in_time


def role_of(request: Request) -> Role:
    """The role of an ``/admin/v1`` call's token (set by ``authorize``)."""
    role = getattr(request.state, ROLE_STATE, None)
    return role if isinstance(role, Role) else Role.READ_ONLY  # unknown: the narrower one
