"""`switchyard top` on a screen of a given size: every section shows, each with its most
important rows first and how many more there are; columns with nothing in them go before
columns with data; long ids are shortened in the middle. And the order deployments come in,
shared with the admin web app's Overview and Queues.

Found operating a platform of 57 deployments in an 80x24 terminal: the Processes section was
off screen, 3 of 10 processes showed with no word of the rest, COOLDOWN and ERRORS were
hidden while 7 blank columns stayed, and the saturated deployment was 56th of 57 on the web
pages.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.screen import Screen
from rich.text import Text

from switchyard.schemas.attention import by_attention
from switchyard.schemas.monitor import CooldownState, Overview, QueueState, Rates
from switchyard.top import frame
from switchyard.top._fit import shorten
from tests.unit.test_top import URL, _deployment, _process

pytestmark = pytest.mark.unit

COOLING = "fake--status_500-b06db199"
SATURATED = "fake--slow_1500-93f3a8b8"
ELLIPSIS = "…"


def _burst(idle: int = 53) -> Overview:
    """What the explorer saw: ``idle`` deployments with long ids, one cooling down, one
    saturated with 16 waiting, two with a little traffic; 10 processes, one of them silent."""
    deployments = [
        _deployment(f"fake--_img_src_x_onerror_alert_{i}__m{i}-{i * 2654435761 % 2**32:08x}")
        for i in range(idle)
    ]
    deployments += [
        _deployment("fake--echo", rates=Rates(requests_per_s=0.2)),
        _deployment("demo--demo", concurrency=256, queue=QueueState(concurrency=256, limit=1000)),
        _deployment(
            SATURATED,
            concurrency=4,
            queue=QueueState(waiting=16, held=12, in_flight=4, concurrency=4, limit=30),
            saturated=True,
            rates=Rates(requests_per_s=1.3, p50_ms=1876.0, p99_ms=3170.0),
        ),
        _deployment(
            COOLING,
            rates=Rates(requests_per_s=0.2, error_ratio=1.0),
            cooldown=CooldownState(until=0.0, seconds_left=118.0, status=500, reason="500"),
        ),
    ]
    pipeline = [
        ("tail", "tail"),
        ("gateway", "gateway"),
        ("head", "head-1"),
        ("head", "head-2"),
        ("modelproxy", "modelproxy-1"),
        ("modelproxy", "modelproxy-2"),
        ("secrets", "secrets"),
        ("control", "control"),
        ("accounting", "accounting"),
        ("batch", "batch"),
    ]
    processes = [
        _process(c, i, version="0.2.0", protocol=3, healthy=i != "head-2", last_seen_s=2.0)
        for c, i in pipeline
    ]
    return Overview(
        at=1_800_000_000.0,
        deployments=deployments,
        processes=processes,
        totals=Rates(requests_per_s=1.6, p50_ms=1876.0, p99_ms=3170.0),
    )


def _on_screen(overview: Overview, width: int, height: int) -> list[str]:
    """The frame as the live view draws it: rich's ``Live`` on the alternate screen puts it
    in a ``Screen``, which keeps the first ``height`` lines."""
    frame_lines = _printed(overview, width, height)
    assert len(frame_lines) <= height, "the frame itself must fit, not be cropped"
    console = Console(width=width, height=height, record=True, file=io.StringIO())
    console.print(Screen(frame(overview, url=URL, interval=1.0, height=height)))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[: len(frame_lines)] == frame_lines
    return frame_lines


def _printed(overview: Overview, width: int, height: int | None = None) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(frame(overview, url=URL, interval=1.0, height=height))
    return [line.rstrip() for line in console.export_text().splitlines()]


def _section(lines: list[str], title: str) -> tuple[list[str], list[str], str]:
    """A table's header cells, its rows' first cells, and the line under it (or "")."""
    at = lines.index(title)
    header = lines[at + 1].split()
    body = [line for line in lines[at + 2 :] if not line.startswith("─")]
    rows: list[str] = []
    for line in body:
        if not line or line.startswith((ELLIPSIS, "(")) or line in ("Processes",):
            note = line if line.startswith((ELLIPSIS, "(")) else ""
            return header, rows, note
        rows.append(line)
    return header, rows, ""


def _same_id(cell: str, full: str) -> bool:
    """``cell`` is ``full``, or ``full`` shortened with an ellipsis in the middle."""
    if ELLIPSIS not in cell:
        return cell == full
    head, tail = cell.split(ELLIPSIS)
    return full.startswith(head) and full.endswith(tail) and len(cell) < len(full)


def test_at_80x24_every_section_shows_its_most_important_rows_and_how_many_more() -> None:
    lines = _on_screen(_burst(), 80, 24)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith(f"switchyard top  {URL}")
    assert any("cooling down 1" in line for line in lines[:6])
    # Deployments: the one cooling down, then the saturated one; the rest counted below.
    header, rows, note = _section(lines, "Deployments")
    assert header[:3] == ["DEPLOYMENT", "QUEUED", "IN"]
    assert "COOLDOWN" in header  # a row cools: its column stays
    assert "ERRORS" in header  # a row fails
    assert not {"TTFT", "REDELIV"} & set(header)  # blank in every row: gone first
    firsts = [row.split()[0] for row in rows]
    assert _same_id(firsts[0], COOLING)
    assert _same_id(firsts[1], SATURATED)
    assert "1m58s left (500)" in rows[0]
    assert "16 (12 held)" in rows[1]
    assert len(rows) >= 5
    assert note.startswith(f"{ELLIPSIS} {57 - len(rows)} more, all idle")
    # Long ids are shortened in the middle (provider and tail kept), not left to push columns
    # out: every shown one is the start and the end of a real id.
    shortened = [cell for cell in firsts if ELLIPSIS in cell]
    assert shortened
    ids = {d.id for d in _burst().deployments}
    assert all(any(_same_id(cell, full) for full in ids) for cell in firsts)
    assert all(cell.startswith("fake--") or cell == "demo--demo" for cell in firsts)
    # Processes: the silent one first, then the rest counted.
    header, rows, note = _section(lines, "Processes")
    assert header[:2] == ["COMPONENT", "INSTANCE"]
    assert rows[0].split()[:3] == ["head", "head-2", "silent"]
    assert len(rows) >= 3
    assert note.startswith(f"{ELLIPSIS} {10 - len(rows)} more, all healthy")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (200, 60), (60, 20)])
def test_every_size_shows_the_header_and_both_sections_within_the_screen(
    width: int, height: int
) -> None:
    lines = _on_screen(_burst(), width, height)
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("switchyard top")
    for title, total in (("Deployments", 57), ("Processes", 10)):
        _, rows, note = _section(lines, title)
        assert rows, title
        if len(rows) < total:
            assert note.startswith(f"{ELLIPSIS} {total - len(rows)} more"), (title, note)
    _, rows, _ = _section(lines, "Deployments")
    assert _same_id(rows[0].split()[0], COOLING)
    assert _same_id(rows[1].split()[0], SATURATED)


def test_a_tall_enough_screen_shows_every_row_with_room_between_sections() -> None:
    lines = _on_screen(_burst(idle=2), 200, 60)
    assert not any(line.startswith(ELLIPSIS) for line in lines)
    assert len(_section(lines, "Deployments")[1]) == 6
    assert len(_section(lines, "Processes")[1]) == 10
    assert lines[lines.index("Processes") - 1] == ""  # a blank line above each section


def test_a_tiny_screen_still_shows_the_header_and_both_titles() -> None:
    lines = _on_screen(_burst(), 80, 12)
    assert lines[0].startswith("switchyard top")
    assert "Deployments" in lines
    assert "Processes" in lines
    assert lines[-1].startswith(f"{ELLIPSIS} ")  # the processes, counted


def test_printed_without_a_height_a_frame_has_every_row() -> None:
    """``--once`` and frames into a pipe: the whole overview."""
    lines = _printed(_burst(), 200)
    assert not any(line.startswith(ELLIPSIS) for line in lines)
    shown = {line.split()[0] for line in lines if line.split()[:1] and "--" in line.split()[0]}
    assert shown == {d.id for d in _burst().deployments}


def test_columns_with_nothing_in_them_go_before_columns_with_data() -> None:
    """Only COOLDOWN and ERRORS have something to say: they stay, the blank ones go, and the
    line under the table names only hidden columns with data."""
    overview = _burst(idle=3)
    lines = _printed(overview, 80)
    header, _, note = _section(lines, "Deployments")
    assert {"COOLDOWN", "ERRORS", "REQ/S"} <= set(header)
    assert not {"TTFT", "REDELIV"} & set(header)
    assert "TTFT" not in note
    assert "REDELIV" not in note


def test_a_long_id_loses_its_middle_keeping_the_provider_and_the_tail() -> None:
    full = "fake--_img_src_x_onerror_alert_10__m10-5b337dce"
    short = shorten(Text(full, style="bold red"), 22)
    assert short.cell_len == 22
    assert short.plain.startswith("fake--")
    assert short.plain.endswith("5b337dce")
    assert _same_id(short.plain, full)
    assert short.style == "bold red"
    assert shorten(Text("fake--echo"), 22).plain == "fake--echo"
    # Without a provider prefix it keeps a third of its start; or it is cut at the end.
    assert shorten(Text("modelproxy-6c8f7d9b5-x2k4q-1"), 12).plain == "mod…-x2k4q-1"
    assert shorten(Text("chat, held, cool, vaulted"), 10, "end").plain == "chat, hel…"


def test_deployments_needing_attention_come_first_then_by_id() -> None:
    """The order of `switchyard top` and of the admin Overview and Queues (one function)."""
    ordered = [d.id for d in by_attention(_burst().deployments)]
    assert ordered[:4] == [COOLING, SATURATED, "fake--echo", "demo--demo"]
    assert ordered[4:] == sorted(ordered[4:])
    failing = _deployment("zz--failing", rates=Rates(error_ratio=0.2))
    queued = _deployment("aa--queued", queue=QueueState(waiting=3, concurrency=8, limit=100))
    busy = _deployment("aa--busy", rates=Rates(requests_per_s=9.0))
    assert [d.id for d in by_attention([busy, queued, failing])] == [
        "zz--failing",
        "aa--queued",
        "aa--busy",
    ]
