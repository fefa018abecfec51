"""The refused share (429s) next to the error share (5xx): how control counts it from the
edges' beats, and how `switchyard top` and the admin Overview show it.

An overloaded platform answered most requests 429 ``tenant_queue_full`` while both views
showed 0% errors and a low latency: the error share counts 5xx only, and latency runs from
dispatch. Client mistakes (400, 401...) are neither errors nor refusals."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console, RenderableType
from rich.style import Style

from switchyard.admin.ui.render import NONE, render
from switchyard.config import load_settings
from switchyard.control.monitor import Monitor
from switchyard.control.traffic_window import EdgeCounts, Second, edge_counts, rates
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.monitor import Heartbeat, Overview, Rates
from switchyard.top import frame

pytestmark = pytest.mark.unit


def _answered(ok: int = 0, client: int = 0, refused: int = 0, failed: int = 0) -> dict[str, int]:
    """An edge's totals by status class, as its heartbeat carries them."""
    return {"2xx": ok, "4xx": client, "429": refused, "5xx": failed}


# ---- counting ----


def test_between_two_beats_429s_are_refusals_5xx_errors_and_client_mistakes_neither() -> None:
    before = _answered(ok=10, client=2, refused=1, failed=1)
    now = _answered(ok=17, client=7, refused=21, failed=3)
    assert edge_counts(now, before) == EdgeCounts(requests=7 + 5 + 20 + 2, errors=2, refused=20)


def test_an_edge_older_than_a_status_class_counts_it_as_none() -> None:
    assert edge_counts({"2xx": 5, "5xx": 1}, {"2xx": 1}) == EdgeCounts(5, 1, 0)


def test_counts_that_went_backwards_are_no_negative_traffic() -> None:
    assert edge_counts(_answered(ok=1), _answered(ok=9, refused=4)) == EdgeCounts(0, 0, 0)


def test_the_refused_share_is_of_every_request_and_known_only_where_refusals_are_counted() -> None:
    points = [Second(1, requests=60, errors=3, refused=30), Second(2, requests=40, refused=20)]
    edges = rates(points, 10, refusals=True)
    assert (edges.requests_per_s, edges.error_ratio, edges.refused_ratio) == (10.0, 0.03, 0.5)
    # A deployment's points come from model-proxies, which never see a refusal: not 0, unknown.
    assert rates(points, 10).refused_ratio is None
    assert rates([], 10, refusals=True).refused_ratio == 0.0  # edges idle: nothing refused


def _monitor() -> Monitor:
    settings = load_settings(None, env={})
    return Monitor(None, settings, Metrics("control"), lambda: settings.route_table, Cooldowns())  # type: ignore[arg-type]


def _beat(instance: str, pid: int, answered: dict[str, int]) -> Heartbeat:
    return Heartbeat(component="tail", instance=instance, pid=pid, requests=answered)


def test_the_overview_totals_have_the_share_every_edge_refused() -> None:
    monitor = _monitor()
    at = 1_800_000_000.5
    for _ in range(2):  # a delta needs two beats of one process
        monitor.add_heartbeat(_beat("tail-1", 1, _answered()), at)
        monitor.add_heartbeat(_beat("gateway", 2, _answered()), at)
    # edges report: none refused (the overview counts whole seconds: that one is over)
    assert monitor.overview(at + 1).totals.refused_ratio == 0.0
    # tail-1: 10 answered, 80 refused, 10 bad keys; the gateway: 98 answered, 2 queue_full
    monitor.add_heartbeat(_beat("tail-1", 1, _answered(ok=10, client=10, refused=80)), at)
    monitor.add_heartbeat(_beat("gateway", 2, _answered(ok=98, failed=2)), at)
    totals = monitor.overview(at + 1).totals
    assert (totals.refused_ratio, totals.error_ratio) == (0.4, 0.01)
    # A restarted edge (another pid) starts its counts again: no delta from the old process.
    monitor.add_heartbeat(_beat("tail-1", 3, _answered(refused=500)), at)
    assert monitor.overview(at + 1).totals.refused_ratio == 0.4


def test_without_edge_reports_the_refused_share_is_unknown() -> None:
    monitor = _monitor()
    monitor.add_heartbeat(Heartbeat(component="head", instance="head-1", pid=4))
    overview = monitor.overview()
    assert overview.totals.refused_ratio is None
    assert all(d.rates.refused_ratio is None for d in overview.deployments)


# ---- showing ----


def _overview(error_ratio: float, refused_ratio: float | None) -> Overview:
    totals = Rates(requests_per_s=120.0, error_ratio=error_ratio, refused_ratio=refused_ratio)
    return Overview(at=1_800_000_000.0, deployments=[], processes=[], totals=totals)


def _styles(renderable: RenderableType, width: int = 200) -> tuple[str, dict[str, Style]]:
    """The text of ``renderable`` and the style of each piece of it."""
    console = Console(width=width, file=io.StringIO(), color_system="truecolor")
    text, styles = "", {}
    for segment in console.render(renderable):
        text += segment.text
        if segment.text.strip() and segment.style is not None:
            styles[segment.text] = segment.style
    return text, styles


@pytest.mark.parametrize(
    ("refused", "shown", "colour"),
    [(0.42, "42.0%", "red"), (0.03, "3.0%", "yellow"), (0.0, "0%", None), (None, "-", None)],
)
def test_top_shows_the_refused_share_next_to_errors_red_when_high(
    refused: float | None, shown: str, colour: str | None
) -> None:
    text, styles = _styles(frame(_overview(0.02, refused), url="http://gw"))
    assert re.search(rf"errors 2\.0%\s+refused {re.escape(shown)}\s", text), text
    style = styles.get(shown)
    got = style.color.name if style is not None and style.color is not None else None
    assert got == colour


def _page(view: Overview | None) -> str:
    return render(
        "overview.html",
        active="overview",
        title="Overview",
        session=SimpleNamespace(actor="Ada"),
        csrf="c",
        flashes=[],
        view=view,
        error="",
        components=[],
        mixed=set(),
    )


def _stat(html: str, name: str) -> tuple[str, str]:
    """The classes and the text of the Overview's ``data-stat=name`` value."""
    found = re.search(rf'<span class="value ?([^"]*)" data-stat="{name}"[^>]*>([^<]*)<', html)
    assert found, name
    return found.group(1).strip(), found.group(2)


def test_the_admin_overview_shows_the_refused_share_next_to_the_error_ratio() -> None:
    html = _page(_overview(0.02, 0.42))
    assert html.index('data-stat="error_ratio"') < html.index('data-stat="refused_ratio"')
    assert _stat(html, "refused_ratio") == ("bad", "42.0%")
    assert _stat(html, "error_ratio") == ("warn", "2.0%")
    calm = _page(_overview(0.0, 0.0))
    assert _stat(calm, "refused_ratio") == ("", "0.0%")
    assert _stat(calm, "error_ratio") == ("", "0.0%")
    assert _stat(_page(_overview(0.0, None)), "refused_ratio") == ("", NONE)  # not known
    assert _stat(_page(None), "refused_ratio") == ("", NONE)
