"""How the admin API's answers that are not JSON are documented in its OpenAPI document (the
handlers return streaming responses; these classes only name the media type)."""

from __future__ import annotations

from starlette.responses import Response

from switchyard.admin.audit_export import MEDIA_TYPE


class EventStream(Response):
    """``/stream``: server-sent events."""

    media_type = "text/event-stream"


class JsonLines(Response):
    """``/audit/export``: JSON Lines (it was documented as JSON, so a client generated from the
    document, and the schema fuzz test, expected JSON)."""

    media_type = MEDIA_TYPE
