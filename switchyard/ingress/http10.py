"""An answer of unknown length to an HTTP/1.0 client: its body raw, then the connection closed.

uvicorn frames every answer that has no ``Content-Length`` (a stream) with
``Transfer-Encoding: chunked``, whatever the request's version. An HTTP/1.0 client does not
know chunked encoding (RFC 9112 section 6.1: a server must not send it to one) and reads the
chunk sizes as part of the body (``curl -0`` printed them in the middle of the events). To such
a client an answer of unknown length is its bytes as they are, ended by closing the
connection (RFC 9112 section 6.3), which is what :class:`UnframedCycle` sends.

uvicorn creates its request cycle itself, so the protocol (:mod:`.protocol`) gives an HTTP/1.0
request's cycle this class before the application runs (nothing else of the cycle changes;
an HTTP/1.1 request keeps uvicorn's own).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

_NO_BODY = frozenset({204, 304})


class UnframedCycle(RequestResponseCycle):
    """uvicorn's request cycle, but an answer with no declared length is not chunked: its
    body goes out as it comes and the connection closes at its end."""

    unframed = False  # set per answer, in ``send``

    async def send(self, message: Any) -> None:
        if not self.response_started:
            if message["type"] == "http.response.start" and _needs_framing(self, message):
                self.unframed = True
                self.chunked_encoding = False  # uvicorn adds chunked only while this is None
                self.keep_alive = False  # "connection: close": the close ends the body
            await super().send(message)
            return
        if not self.unframed or self.response_complete or message["type"] != "http.response.body":
            await super().send(message)  # (uvicorn's checks and errors for the rest)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        body = message.get("body", b"")
        if body:
            self.transport.write(body)
        if not message.get("more_body", False):
            self.response_complete = True
            self.message_event.set()
            self.transport.close()
            self.on_response()


def _needs_framing(cycle: RequestResponseCycle, start: Any) -> bool:
    """Whether uvicorn would chunk this answer: no length or framing of its own, and a body."""
    if cycle.scope["method"] == "HEAD" or start["status"] in _NO_BODY:
        return False
    names = {name.lower() for name, _ in start.get("headers", ())}
    return b"content-length" not in names and b"transfer-encoding" not in names
