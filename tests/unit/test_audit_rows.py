"""An audit row's flag: an entry's own ``ts`` against the time the stream stored it."""

from __future__ import annotations

import math

from switchyard.admin.audit import SKEW_S, AuditRow
from switchyard.admin.ui.render import ENV
from switchyard.schemas.audit import AuditEntry

STORED = 1_780_000_000.0


def _row(ts: float) -> AuditRow:
    return AuditRow(7, AuditEntry(ts=ts, actor="a", via="cli", action="secret.delete"), STORED)


def test_an_entry_written_when_it_was_stored_is_not_flagged() -> None:
    for ts in (STORED, STORED - 2, STORED + SKEW_S):
        assert not _row(ts).ts_mismatch
        assert _row(ts).doc()["ts_mismatch"] is False


def test_a_back_dated_future_or_impossible_time_is_flagged() -> None:
    for ts in (STORED - 3 * 86400, STORED + SKEW_S + 1, 1e300, math.inf, -5.0):
        assert _row(ts).ts_mismatch, ts
    assert _row(1e300).claimed is None
    assert _row(-5.0).claimed is None
    assert _row(STORED - 86400).claimed == STORED - 86400


def test_the_audit_page_shows_an_impossible_time_without_failing() -> None:
    """A `ts` no date can show (1e300) would stop the page rendering its date."""
    from switchyard.admin.audit import AuditPage, AuditQuery

    page = AuditPage([_row(1e300), _row(STORED - 86400)], 2, ["secret"])
    html = ENV.get_template("audit.html").render(
        page=page,
        query=AuditQuery(),
        base="/ui/audit?",
        session={"actor": "me"},
        nav=[],
        flashes=[],
        csrf="",
        title="Audit log",
    )
    assert "says an impossible time" in html
    assert "says 2026-05-" in html
