"""Copy-and-truncate rotation of the local stack's log files (plain files, no process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.stack.logrotate import rotate

pytestmark = pytest.mark.unit


def test_a_file_past_its_cap_is_copied_and_emptied_keeping_so_many_copies(tmp_path: Path) -> None:
    log = tmp_path / "head-1.log"
    for round_ in range(4):
        log.write_text(f"round {round_}\n" * 100)
        assert rotate(log, max_bytes=500, keep=2)
        assert log.stat().st_size == 0
    assert (tmp_path / "head-1.log.1").read_text().startswith("round 3")
    assert (tmp_path / "head-1.log.2").read_text().startswith("round 2")
    assert not (tmp_path / "head-1.log.3").exists()


def test_small_empty_and_missing_files_are_left_alone(tmp_path: Path) -> None:
    """A reviewer's find: a cap of 0 bytes rotated empty files every round, pushing the real
    copies out; an empty file is never rotated."""
    log = tmp_path / "tail.log"
    log.write_text("short\n")
    assert not rotate(log, max_bytes=500, keep=3)
    log.write_text("")
    assert not rotate(log, max_bytes=0, keep=3)
    assert not rotate(tmp_path / "gone.log", max_bytes=0, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tail.log"]
