"""Server-sent events numbered as OpenAI's Responses API numbers them, for the fake providers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class NumberedEvents:
    """Writes ``event: <type>`` frames to ``resp``, each with the next ``sequence_number``."""

    def __init__(self, resp: web.StreamResponse) -> None:
        self._resp = resp
        self._seq = 0

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        doc = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        await self._resp.write(f"event: {kind}\ndata: {json.dumps(doc)}\n\n".encode())
