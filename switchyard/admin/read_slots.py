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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from switchyard.admin.token import Role
from switchyard.errors import RateLimited

EXPORT = "audit export"
STREAM = "live stream"
EXPORTS_AT_ONCE = 2  # per token role
STREAMS_AT_ONCE = 50  # per token role: a team's open overview and queue pages
RETRY_AFTER_S = {EXPORT: 10.0, STREAM: 30.0}
CODE = "too_many_concurrent_requests"
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


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back when it ends, however it ends."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        release: Callable[[], None],
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def role_of(request: Request) -> Role:
    """The role of an ``/admin/v1`` call's token (set by ``authorize``)."""
    role = getattr(request.state, ROLE_STATE, None)
    return role if isinstance(role, Role) else Role.READ_ONLY  # unknown: the narrower one
