"""Request handling for the NATS micro services (secrets, control): one boundary per request.

Each request runs in a supervised task (nats-py runs one subscription's callbacks one at a time,
so a slow request must not hold up the next), inside one error boundary that answers with an
OpenAI-shaped error and ``Sy-Status`` and never lets an exception escape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.micro.request import Request

from switchyard.bus import headers as h
from switchyard.errors import ApiError, ServiceUnavailable
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor
from switchyard.schemas.openai import error_body

log = logging.getLogger("switchyard.endpoints")

Handler = Callable[[Request], Awaitable[None]]


class Endpoints:
    """Handlers of a NATS micro service, each request in a tracked task and one boundary.

    Args:
        name: for logs.
        limit: requests handled at once (past it, NATS buffers them).
        translate: turns a domain error into the :class:`ApiError` to answer with, or None
            when it is not one it knows (it is then logged as an internal error).
    """

    def __init__(
        self,
        name: str,
        translate: Callable[[Exception], ApiError | None] | None = None,
        *,
        limit: int = 256,
        observe: Callable[[str, ApiError | None], None] | None = None,
    ) -> None:
        self._name = name
        self._translate = translate
        self._observe = observe
        self._tasks = TaskSupervisor(f"{name}-endpoints", limit=limit)

    def wrap(self, handler: Handler) -> Handler:
        async def start(req: Request) -> None:
            try:
                await self._tasks.spawn_bounded(self._boundary(handler, req))
            except SupervisorClosed:
                await reply_error(
                    req,
                    ServiceUnavailable(
                        f"the {self._name} service is shutting down; retry", code="stopping"
                    ),
                )

        return start

    async def _boundary(self, handler: Handler, req: Request) -> None:
        failure: ApiError | None = None
        try:
            await handler(req)
        except ApiError as exc:
            failure = exc
        except Exception as exc:  # the error boundary: answer, log, keep serving
            failure = self._translate(exc) if self._translate else None
            if failure is None:
                # Logged without the request: it may carry a secret value.
                log.exception("internal error in the %s service on %s", self._name, req.subject)
                failure = ApiError(f"internal error in the {self._name} service")
        if self._observe is not None:
            self._observe(req.subject, failure)
        if failure is not None:
            await reply_error(req, failure)

    async def drain(self, grace: float) -> None:
        """Finish requests in hand within ``grace``, then cancel the rest. Idempotent."""
        await self._tasks.drain(grace)


async def reply_ok(req: Request, body: bytes) -> None:
    await req.respond(body, headers={h.STATUS: "200"})


async def reply_error(req: Request, exc: ApiError) -> None:
    await req.respond(error_body(exc), headers={h.STATUS: str(exc.status)})
