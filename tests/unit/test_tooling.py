"""The development tooling the README promises comes with ``pip install -e '.[dev]'``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent.parent


def test_just_comes_with_the_dev_extra_and_knows_the_readme_recipes() -> None:
    """README: `just check`, `just test`, `just bench`; a fresh clone had no `just` at all."""
    just = shutil.which("just", path=str(Path(sys.executable).parent))
    assert just is not None, "no `just` next to this Python: the dev extra must bring rust-just"
    summary = subprocess.run(
        [just, "--summary"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    assert {"up", "test", "check", "bench"} <= set(summary.stdout.split())
