"""Anthropic's paged model listing: limits, cursors in both directions, and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.dialects.anthropic import model_body, page_body
from switchyard.errors import InvalidRequest

IDS = [f"m{i}" for i in range(7)]


def _page(**query: str) -> dict[str, Any]:
    page: dict[str, Any] = json.loads(page_body(IDS, query))
    return page


def test_first_page_defaults_to_twenty_and_describes_each_model() -> None:
    many = [f"m{i}" for i in range(25)]
    page = json.loads(page_body(many, {}))
    assert [m["id"] for m in page["data"]] == many[:20]
    assert (page["has_more"], page["first_id"], page["last_id"]) == (True, "m0", "m19")
    assert page["data"][0] == {
        "type": "model",
        "id": "m0",
        "display_name": "m0",
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
    }
    assert json.loads(model_body("m3")) == page["data"][3]


def test_after_id_walks_forward_to_the_end() -> None:
    seen: list[str] = []
    page = _page(limit="3")
    seen += [m["id"] for m in page["data"]]
    while page["has_more"]:
        page = _page(limit="3", after_id=page["last_id"])
        seen += [m["id"] for m in page["data"]]
    assert seen == IDS


def test_before_id_walks_back_to_the_start() -> None:
    page = _page(limit="3", before_id="m6")
    assert [m["id"] for m in page["data"]] == ["m3", "m4", "m5"]
    assert page["has_more"] is True
    page = _page(limit="3", before_id=page["first_id"])
    assert [m["id"] for m in page["data"]] == ["m0", "m1", "m2"]
    assert page["has_more"] is False
    empty = _page(before_id="m0")
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_the_last_model_as_cursor_gives_an_empty_last_page() -> None:
    assert _page(after_id="m6") == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x", "²", " 5", "1_0", "9" * 50, ""])
def test_limit_outside_one_to_a_thousand_is_refused(limit: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _page(limit=limit)
    assert refused.value.param == "limit"


def test_cursors_must_name_a_listed_model_and_not_both() -> None:
    with pytest.raises(InvalidRequest) as unknown:
        _page(after_id="gone")
    assert unknown.value.param == "after_id"
    assert "gone" in unknown.value.message
    with pytest.raises(InvalidRequest) as both:
        _page(after_id="m1", before_id="m4")
    assert both.value.param == "before_id"
