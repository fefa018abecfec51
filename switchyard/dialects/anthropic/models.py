"""The model listing in Anthropic's shape, for ``GET /v1/models`` from an Anthropic client.

Anthropic's SDKs (and agents built on them) list models at the same path as OpenAI's, and tell
themselves apart by the ``anthropic-version`` header they always send. Anthropic's listing is a
page: ``{"data": [...], "has_more", "first_id", "last_id"}``, each model
``{"type": "model", "id", "display_name", "created_at", ...}``, paged with ``limit`` (1-1000,
default 20), ``after_id`` and ``before_id``. The gateway knows no release dates, so
``created_at`` is the epoch, which Anthropic documents for an unknown date, and every model it
routes is ``active``. The order is the gateway's own listing order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from switchyard.dialects._common import encode
from switchyard.dialects.anthropic.paging import page

VERSION_HEADER = "anthropic-version"
_EPOCH = "1970-01-01T00:00:00Z"


def model_info(model_id: str) -> dict[str, Any]:
    """One model as Anthropic describes it."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": _EPOCH,
        "lifecycle": "active",
    }


def model_body(model_id: str) -> bytes:
    """The body of ``GET /v1/models/{id}``."""
    return encode(model_info(model_id))


def page_body(ids: Sequence[str], query: Mapping[str, str]) -> bytes:
    """The body of ``GET /v1/models``: one page of ``ids`` chosen by the query string.

    Raises:
        InvalidRequest: ``limit`` is not an integer from 1 to 1000, both cursors are given, or a
            cursor names a model not in the listing.
    """
    return encode(page(ids, query, model_info, "model"))
