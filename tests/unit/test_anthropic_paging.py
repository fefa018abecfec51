"""Anthropic's cursor pages go on past a cursor deleted meanwhile, when the listing can place
it (message batches: their ids start with their time), and refuse it when it cannot."""

from __future__ import annotations

import pytest

from switchyard.dialects.anthropic.paging import page
from switchyard.errors import InvalidRequest

# Newest first, by (created_at, id): the id's number is its time.
IDS = [f"b{t}" for t in (9, 8, 7, 6, 5, 4)]


def _place(item: str) -> tuple[int, str] | None:
    return (int(item[1:]), item) if item[1:].isdecimal() else None


def _ids(query: dict[str, str], ids: list[str] = IDS) -> list[str]:
    return list(page(ids, query, lambda i: i, "batch", _place)["data"])


def test_a_deleted_after_id_continues_where_it_was() -> None:
    rest = [i for i in IDS if i not in ("b9", "b8")]  # the first page, deleted
    assert _ids({"limit": "2", "after_id": "b8"}, rest) == ["b7", "b6"]
    assert _ids({"limit": "2", "after_id": "b6"}, ["b9", "b5", "b4"]) == ["b5", "b4"]


def test_a_deleted_before_id_pages_back_from_where_it_was() -> None:
    assert _ids({"limit": "2", "before_id": "b5"}, ["b9", "b8", "b7", "b4"]) == ["b8", "b7"]


def test_a_cursor_that_cannot_be_placed_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="no batch `nope`") as refused:
        _ids({"after_id": "nope"})
    assert refused.value.param == "after_id"
    with pytest.raises(InvalidRequest, match="no model `b1`"):  # a listing without place
        page(IDS, {"after_id": "b1"}, lambda i: i, "model")


def test_a_listed_cursor_is_found_as_before() -> None:
    page_doc = page(IDS, {"limit": "2", "after_id": "b8"}, lambda i: i, "batch", _place)
    assert page_doc["data"] == ["b7", "b6"]
    assert page_doc["has_more"] is True
