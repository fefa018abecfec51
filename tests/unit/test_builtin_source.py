"""The admin app labels the built-in demo route and provider as built in: it said
`switchyard.yaml`, which does not contain them (they come from ``demo_model``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from switchyard.admin.file_table import FileTable
from switchyard.admin.ui.pages.tables import source
from switchyard.config import load_settings

pytestmark = pytest.mark.unit

FILE = """
providers:
  mine: {kind: openai-compatible, api_base: "http://127.0.0.1:9/v1"}
routes:
  chat:
    deployments: [{provider: mine, model: m}]
"""


def test_the_demo_model_is_built_in_and_the_files_items_are_the_files(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(FILE)
    files = FileTable(load_settings(path, env={}), path)
    assert files.builtin("providers") == {"demo"}
    assert files.builtin("routes") == {"demo"}
    file = live = files.current()
    for kind, name, said in (
        ("providers", "demo", "builtin"),
        ("routes", "demo", "builtin"),
        ("providers", "mine", "file"),
        ("routes", "chat", "file"),
    ):
        assert source(kind, name, live, file, files.builtin(kind)) == said
    changed = msgspec.structs.replace(
        live, routes={**live.routes, "demo": live.routes["chat"], "added": live.routes["chat"]}
    )
    assert source("routes", "demo", changed, file, files.builtin("routes")) == "builtin-drift"
    assert source("routes", "added", changed, file, files.builtin("routes")) == "live"


def test_a_demo_the_file_defines_is_the_files(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(FILE + "  demo:\n    deployments: [{provider: mine, model: d}]\n")
    files = FileTable(load_settings(path, env={}), path)
    assert files.builtin("routes") == frozenset()
    assert files.builtin("providers") == {"demo"}  # the file's `demo` route uses `mine`
