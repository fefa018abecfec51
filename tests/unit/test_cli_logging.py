"""What a one-shot command prints with `logging.level: debug`: its own lines, not the libraries'."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.cli import main
from switchyard.config import load_settings
from switchyard.telemetry import setup_logging

pytestmark = pytest.mark.unit


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger as it was: `main` configures it for the whole process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _debug_lines(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    main(argv)
    capsys.readouterr()
    logging.getLogger("redis.asyncio.connection").debug(
        "Failed to enable maintenance notifications"
    )
    logging.getLogger("nats.aio.client").debug("a library's debug line")
    logging.getLogger("redis.asyncio.connection").warning("a library's warning")
    logging.getLogger("switchyard.keys").debug("our own debug line")
    return capsys.readouterr().err


@pytest.fixture
def debug_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWITCHYARD_LOGGING__LEVEL", "debug")
    return tmp_path / "home"


def test_a_command_leaves_out_library_debug_lines(
    root_logger: logging.Logger, debug_settings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys show` printed `DEBU keys redis.asyncio.connection: Failed to enable maintenance
    notifications...` around its answer."""
    err = _debug_lines(["status", "--home", str(debug_settings)], capsys)
    assert "maintenance notifications" not in err
    assert "a library's debug line" not in err
    assert "a library's warning" in err  # a library's trouble still shows
    assert "our own debug line" in err


def test_a_server_keeps_every_librarys_lines(
    root_logger: logging.Logger, debug_settings: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` keeps them: an operator who turns on debug there asked for them."""
    setup_logging(load_settings(None).logging, "head")
    capsys.readouterr()
    logging.getLogger("nats.aio.client").debug("a library's debug line")
    assert "a library's debug line" in capsys.readouterr().err
