"""A fake OpenAI Responses API (``POST /v1/responses``, streamed) whose streams can fail the way
OpenAI's do: HTTP 200, then an ``error`` or ``response.failed`` event. What it does is chosen by
the requested model:

``ok``              streams ``response.created``, ``.in_progress``, the text, ``.completed``
``error-first``     answers 200 to a stream whose first event is ``error`` (``server_error``)
``failed-opening``  streams ``response.created`` and ``.in_progress``, then ``response.failed``
                    (``server_error``)
``failed-midway``   streams ``response.created``, ``.in_progress`` and the text, then
                    ``response.failed`` (``server_error``)
``invalid-midway``  streams the same, then ``error`` (``invalid_request_error``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.events import NumberedEvents
from tests.fakes.server import FakeServer

TEXT = "native answer"
FAILURE = {"code": "server_error", "message": "The server had an error processing your request"}
INVALID = {"code": "invalid_request_error", "message": "Invalid 'input': too long"}


@dataclass
class FakeResponses(FakeServer):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._responses)

    async def start(self) -> str:
        """Start serving; returns the base URL (``.../v1``, as a provider's ``api_base``)."""
        port = await self.serve()
        return f"http://127.0.0.1:{port}/v1"

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model = body.get("model", "")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        send = NumberedEvents(resp).send

        response: dict[str, Any] = {
            "id": "resp_fake",
            "object": "response",
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
        }
        if model == "error-first":
            await send("error", {**FAILURE, "param": None})
        else:
            await send("response.created", {"response": response})
            await send("response.in_progress", {"response": response})
            if model == "failed-opening":
                failed = {**response, "status": "failed", "error": FAILURE}
                await send("response.failed", {"response": failed})
            else:
                where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
                await send("response.output_text.delta", {**where, "delta": TEXT})
                if model == "failed-midway":
                    failed = {**response, "status": "failed", "error": FAILURE}
                    await send("response.failed", {"response": failed})
                    await resp.write_eof()
                    return resp
                if model == "invalid-midway":
                    await send("error", {**INVALID, "param": None})
                    await resp.write_eof()
                    return resp
                usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
                done = {**response, "status": "completed", "usage": usage}
                await send("response.completed", {"response": done})
        await resp.write_eof()
        return resp
