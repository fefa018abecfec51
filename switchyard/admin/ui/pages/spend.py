"""Spend by key, team, model or deployment per day: a chart and a ranked, paged table read from
the day counters and rankings accounting keeps (never from raw events), and a CSV export."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from starlette.responses import Response

from switchyard.admin.ui.context import Route, Ui
from switchyard.limits.keys import DAILY_KEPT_DAYS
from switchyard.schemas.keys import KEY_ID

KINDS = {"key": "Keys", "team": "Teams", "model": "Models", "deployment": "Deployments"}
DAYS = (1, 7, 30, DAILY_KEPT_DAYS)
CHART_SERIES = 5


def _by(ui: Ui) -> str:
    kind = ui.query("by", "model")
    return kind if kind in KINDS else "model"


def _days(ui: Ui) -> tuple[int, str]:
    """The period asked for, at most :data:`DAILY_KEPT_DAYS`, and what to tell the reader
    when it asked for more (``?days=365`` was shown as 90 days with no word of it)."""
    asked = ui.int_query("days", 7, 1)
    if asked <= DAILY_KEPT_DAYS:
        return asked, ""
    return DAILY_KEPT_DAYS, (
        f"Daily spend is kept {DAILY_KEPT_DAYS} days: this shows the last {DAILY_KEPT_DAYS}, "
        f"not the {asked} asked for."
    )


async def spend_page(ui: Ui) -> Response:
    kind, (days, notice) = _by(ui), _days(ui)
    offset, limit = ui.int_query("offset", 0), ui.int_query("limit", 50, 1, 500)
    rows, total = await ui.admin.spend.ranking(kind, days=days, offset=offset, limit=limit)
    top = (
        rows[:CHART_SERIES]
        if offset == 0
        else (await ui.admin.spend.ranking(kind, days=days, limit=CHART_SERIES))[0]
    )
    totals = await ui.admin.spend.days_total(days)
    names: dict[str, str] = {}
    if kind == "key":
        for row in rows + top:
            key = ui.admin.index.get(row["name"])
            names[row["name"]] = key.name if key else row["name"]
    chart: dict[str, Any] = {
        "days": [t["day"] for t in totals],
        "total": [t["cost_usd"] for t in totals],
        "series": [
            {
                "name": names.get(r["name"], r["name"]),
                "values": [r["by_day"].get(d, 0) for d in (t["day"] for t in totals)],
            }
            for r in top
        ],
    }
    return ui.page(
        "spend.html",
        "spend",
        "Spend",
        kind=kind,
        kinds=KINDS,
        days=days,
        day_choices=DAYS,
        rows=rows,
        total=total,
        offset=offset,
        limit=limit,
        chart=chart,
        names=names,
        notice=notice,
        grand=sum(t["cost_usd"] for t in totals),
        requests=sum(t["requests"] for t in totals),
        base=ui.root + f"/ui/spend?by={kind}&days={days}&",
    )


FORMULA = ("=", "+", "-", "@", "\t", "\r")
# A separator some spreadsheet may split on (a semicolon locale splits on ``;``, ignoring the
# quotes around a comma-separated field), then what would start a cell there as a formula.
_SPLIT_FORMULA = re.compile(r"([,;\t\r\n][ ]*)([=+\-@])")


def _cell(text: str) -> str:
    """A name as a spreadsheet shows it, never runs it: a leading ``= + - @`` (or a tab or
    carriage return) would make the cell a formula when the export is opened. The same goes
    after any ``,`` ``;`` or tab inside it: a spreadsheet that splits on another separator
    (``;`` in many locales) would start a cell there."""
    first = text.lstrip(" ")[:1]  # (a spreadsheet may skip leading spaces)
    guarded = _SPLIT_FORMULA.sub(r"\1'\2", text)
    return f"'{guarded}" if first in FORMULA else guarded


def csv_text(rows: list[list[object]]) -> str:
    """Rows as CSV with every field quoted (names go through :func:`_cell` first)."""
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerows(rows)
    return out.getvalue()


async def spend_csv(ui: Ui) -> Response:
    """Every member's daily totals over the period, costliest first: every member with spend
    in it (the export once kept only the top ``10,000 // days`` members, so a 90-day file
    dropped all but 111 keys without a word)."""
    kind, (days, notice) = _by(ui), _days(ui)
    if notice:  # a file is read later, away from the page: refuse rather than cut
        return Response(notice, status_code=400, media_type="text/plain")
    key_id = ui.query("key")
    if key_id:
        return await _key_models_csv(ui, key_id, days)
    rows = await ui.admin.spend.export(kind, days=days)
    served = list(SERVED) if kind == "deployment" else []
    lines: list[list[object]] = [[kind, "name", *served, "day", "cost_usd", *COLUMNS]]
    for row in rows:
        key = ui.admin.index.get(row["name"]) if kind == "key" else None
        name = key.name if key else ("" if kind == "key" else row["name"])
        cells: list[object] = [_cell(row["name"]), _cell(name), *(_cell(row[c]) for c in served)]
        lines += _day_lines(cells, row["days"])
    return _csv(lines, f"spend-{kind}-{days}d.csv")


async def _key_models_csv(ui: Ui, key_id: str, days: int) -> Response:
    """One key's spend per model and day (``?by=model&key=ID``, the key page's export)."""
    if not KEY_ID.match(key_id):
        return Response(
            "key must be a key id (key_ and 16 hex digits)", 400, media_type="text/plain"
        )
    key = ui.admin.index.get(key_id)
    ids = [_cell(key_id), _cell(key.name if key else "")]
    lines: list[list[object]] = [["key", "name", "model", "day", "cost_usd", *COLUMNS]]
    for row in await ui.admin.spend.key_models(key_id, days=days):
        lines += _day_lines([*ids, _cell(row["name"])], row["days"])
    return _csv(lines, f"spend-{key_id}-models-{days}d.csv")


COLUMNS = ("requests", "prompt_tokens", "completion_tokens")
# A deployment's columns after its id and name: the provider (account) and model that served.
SERVED = ("provider", "model")


def _day_lines(cells: list[object], days: dict[str, dict[str, Any]]) -> list[list[object]]:
    """A member's lines, one per day it had traffic (oldest first), after ``cells``."""
    out: list[list[object]] = []
    for day, totals in sorted(days.items()):
        if not totals["requests"] and not totals["cost_usd"]:
            continue  # a day it had no traffic
        cost = f"{totals['cost_usd']:.9f}"
        out.append([*cells, day, cost, *(totals[c] for c in COLUMNS)])
    return out


def _csv(lines: list[list[object]], filename: str) -> Response:
    return Response(
        csv_text(lines),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


ROUTES: list[Route] = [("/spend", "GET", spend_page), ("/spend.csv", "GET", spend_csv)]
