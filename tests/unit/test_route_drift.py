"""The difference between the settings file's route table and the live one (pure logic)."""

from __future__ import annotations

import pytest

from switchyard.control.drift import diff, drift_note, merge
from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable

pytestmark = pytest.mark.unit

LOCAL = Provider(kind="openai-compatible", api_base="http://127.0.0.1:9/v1")


def _route(model: str) -> Route:
    return Route(deployments=(Deployment(provider="local", model=model),))


LIVE = RouteTable(
    providers={"local": LOCAL},
    routes={"small": _route("small-1"), "imported": _route("imp-1")},
)
FILE = RouteTable(
    providers={"local": Provider(kind="openai-compatible", api_base=LOCAL.api_base, concurrency=8)},
    routes={"small": _route("small-2"), "big": _route("big-1")},
)


def test_diff_names_what_is_added_removed_and_changed() -> None:
    lines = [c.describe() for c in diff(LIVE, FILE)]
    assert lines == [
        "~ provider local: concurrency changed",
        "+ route big: added",
        "- route imported: removed",
        "~ route small: deployments changed",
    ]


def test_same_tables_have_no_diff_and_no_note() -> None:
    assert diff(LIVE, LIVE) == []
    assert drift_note(3, [], "switchyard.yaml") == []


def test_merge_keeps_live_only_entries_and_takes_the_files() -> None:
    merged = merge(LIVE, FILE)
    assert set(merged.routes) == {"small", "big", "imported"}
    assert merged.routes["small"] == FILE.routes["small"]
    assert merged.providers["local"].concurrency == 8
    assert [c.action for c in diff(LIVE, merged)] == ["change", "add", "change"]


def test_note_says_what_is_served_and_how_to_apply_the_file() -> None:
    note = "\n".join(drift_note(7, diff(LIVE, FILE), "switchyard.yaml"))
    assert "revision 7" in note
    assert "+ route big: only in switchyard.yaml" in note
    assert "- route imported: only in the live table" in note
    assert "switchyard routes sync" in note
    assert "--apply" in note
