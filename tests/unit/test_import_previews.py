"""The import previews a web app session keeps until one is applied: by id, bounded, aging out;
and which live entries changed since a preview was shown."""

from __future__ import annotations

from typing import Any, cast

import pytest

from switchyard.admin.context import Imported
from switchyard.admin.ui.pages.imports import KEPT, KEPT_S, Preview, Previews, changed_since
from switchyard.admin.ui.pages.tables import digest
from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable

pytestmark = pytest.mark.unit


def _result(n: int) -> Preview:
    return Preview(cast(Imported, ("config", n)), {})  # the store never looks inside


def test_a_preview_is_applied_by_its_id_once() -> None:
    previews = Previews()
    a, b = previews.add(_result(1), now=0), previews.add(_result(2), now=1)
    assert a != b
    assert previews.take(a, now=2) == _result(1)
    assert previews.take(a, now=3) is None  # applied already
    assert previews.take("", now=3) is None
    assert previews.take(b, now=3) == _result(2)


def test_only_the_newest_previews_are_kept_and_only_for_a_while() -> None:
    previews = Previews()
    ids: list[Any] = [previews.add(_result(n), now=n) for n in range(KEPT + 1)]
    assert previews.take(ids[0], now=KEPT + 1) is None  # pushed out by the newest
    assert previews.take(ids[1], now=KEPT + 1) == _result(1)
    assert previews.take(ids[2], now=2 + KEPT_S + 1) is None  # too old
    assert previews.take(ids[-1], now=KEPT + KEPT_S) == _result(KEPT)


def test_an_expired_preview_is_dropped_at_the_next_preview() -> None:
    """A reviewer's find: an expired preview (with the file's literal keys) stayed in memory
    until applied or pushed out, for up to the session's 24 hours."""
    previews = Previews()
    previews.add(_result(1), now=0)
    assert len(previews) == 1
    previews.add(_result(2), now=KEPT_S + 1)
    assert len(previews) == 1


def _route(model: str) -> Route:
    return Route(deployments=(Deployment(provider="p", model=model),))


def test_an_entry_created_edited_or_deleted_since_the_preview_is_named() -> None:
    """An Apply on a stale preview replaced a route another admin had created meanwhile."""
    provider = Provider(kind="openai")
    seen = {
        "provider p": digest(provider),
        "route same": digest(_route("a")),
        "route gone": digest(_route("b")),
        "route made": "",  # not live when the preview was shown
        "route edited": digest(_route("c")),
        "route filed": "",  # the settings file's: the import leaves it alone
    }
    routes = {"same": _route("a"), "gone": _route("b"), "edited": _route("c")}
    then = RouteTable(providers={"p": provider}, routes=routes)
    file = RouteTable(routes={"filed": _route("f")})
    assert changed_since(seen, then, file) == []
    now = RouteTable(
        providers={"p": provider},
        routes={"same": _route("a"), "made": _route("m"), "edited": _route("d")},
    )
    now_with_file = RouteTable(providers=now.providers, routes={**now.routes, "filed": _route("f")})
    assert changed_since(seen, now_with_file, file) == ["route gone", "route made", "route edited"]
