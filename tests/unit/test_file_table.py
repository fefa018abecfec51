"""The admin views compare the live route table with the settings file as it is now."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.admin.file_table import FileTable
from switchyard.config import load_settings

pytestmark = pytest.mark.unit

ONE = "routes:\n  first:\n    deployments: [{provider: demo, model: demo}]\n"
TWO = ONE + "  second:\n    deployments: [{provider: demo, model: demo-2}]\n"


def test_an_edited_file_is_read_again_and_a_broken_edit_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(ONE, encoding="utf-8")
    files = FileTable(load_settings(path, env={}), path)
    assert set(files.current().routes) == {"first", "demo"}
    path.write_text(TWO, encoding="utf-8")  # a route added to the file after the start
    assert set(files.current().routes) == {"first", "second", "demo"}
    path.write_text(TWO + "  third: [unclosed\n", encoding="utf-8")  # an edit in progress
    assert set(files.current().routes) == {"first", "second", "demo"}
    path.unlink()  # gone: the last reading stays
    assert set(files.current().routes) == {"first", "second", "demo"}


def test_without_a_file_the_defaults_are_the_reference() -> None:
    files = FileTable(load_settings(env={}), None)
    assert set(files.current().routes) == {"demo"}
