"""``item_reference`` input items: which a request names, and the request with them filled in.

A Responses client that stores its answers (``store`` not false, OpenAI's default) may send
an earlier answer's output items back by id, ``{"type": "item_reference", "id": "msg_..."}``,
instead of their content: the Vercel AI SDK does so from a conversation's second turn, for
assistant messages (and, before its June 2026 releases, for function calls). A translating
deployment keeps the items of the answers it makes (``workers.modelproxy.response_items``);
this module is the pure part: the ids a request references (:func:`referenced`), the request
with each reference replaced by the stored item (:func:`resolved`), the items of an answer
worth keeping (:func:`kept_items`), and the answer to an id that is not there
(:func:`item_not_found`, OpenAI's own 404 for it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from switchyard.dialects._common import invalid
from switchyard.errors import NotFound

REFERENCE = "item_reference"
# The output items a later turn can name: what a translated answer holds.
KEPT_TYPES = frozenset({"message", "function_call", "custom_tool_call"})
# Item ids as the translations make them (``msg_<hex>``, ``fc_<hex>_<n>``), bounded.
ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_REFERENCES = 1000  # item references one request may carry


def referenced(body: Mapping[str, Any]) -> list[str]:
    """The item ids ``body``'s ``input`` references, each once, in order ([] for none).

    Raises:
        InvalidRequest: a reference without a string ``id``, or more than
            :data:`MAX_REFERENCES` of them.
    """
    items = body.get("input")
    if not isinstance(items, list):
        return []
    found: dict[str, None] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("type") != REFERENCE:
            continue
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise invalid(f"input[{i}].id", f"input[{i}].id: must be a non-empty string")
        found[item_id] = None
        if len(found) > MAX_REFERENCES:
            raise invalid("input", f"input: at most {MAX_REFERENCES} item references")
    return list(found)


def resolved(body: Mapping[str, Any], items: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``body`` with every ``item_reference`` whose id is in ``items`` replaced by that item
    (the others stay references: a native deployment's provider holds its own)."""
    out = []
    for item in body["input"]:
        if isinstance(item, Mapping) and item.get("type") == REFERENCE and item["id"] in items:
            out.append(items[item["id"]])
        else:
            out.append(item)
    return {**body, "input": out}


def kept_items(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of an answer's ``output`` a later request may reference."""
    return [
        item
        for item in output
        if item.get("type") in KEPT_TYPES
        and isinstance(item.get("id"), str)
        and ITEM_ID.fullmatch(item["id"]) is not None
    ]


def item_not_found(item_id: str) -> NotFound:
    """OpenAI's answer to a reference it does not hold (404, ``param`` ``input``)."""
    shown = item_id if len(item_id) <= 256 else f"{item_id[:256]}..."
    return NotFound(
        f"Item with id '{shown}' not found. Items are not persisted when `store` is set to "
        "false. Try again with `store` set to true, or remove this item from your input.",
        code="item_not_found",
        param="input",
    )
