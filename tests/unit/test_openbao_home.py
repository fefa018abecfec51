"""A moved stack home is refused at once, not after a minute of an OpenBao that never unseals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from switchyard.errors import StackError
from switchyard.stack import openbao

pytestmark = pytest.mark.unit


def _layout(home: Path) -> openbao.OpenBaoLayout:
    return openbao.OpenBaoLayout(
        dir=home / "openbao", port=8200, cert_dir=home / "certs", mount="secret"
    )


def test_a_home_restored_elsewhere_says_where_it_belongs(tmp_path: Path) -> None:
    """OpenBao stores its audit log's path when it first starts and refuses another one
    ("modifications to audit devices are not allowed"): `up` waited 60 s and said only that
    OpenBao never unsealed."""
    first = tmp_path / "project" / ".switchyard"
    openbao.write_config(_layout(first))
    (first / "openbao" / "data" / "raft").mkdir()  # what a started OpenBao leaves
    openbao.write_config(_layout(first))  # the same place: fine, every `up`

    moved = tmp_path / "renamed" / ".switchyard"
    shutil.copytree(first, moved)
    with pytest.raises(StackError) as refused:
        openbao.write_config(_layout(moved))
    assert f"set up at {first}" in str(refused.value)
    assert "restored at the path it came from" in str(refused.value)

    fresh = tmp_path / "fresh" / ".switchyard"  # nothing set up yet: nothing to refuse
    shutil.copytree(first, fresh)
    shutil.rmtree(fresh / "openbao" / "data")
    openbao.write_config(_layout(fresh))
    marker = (fresh / "openbao" / "audit-path").read_text(encoding="utf-8")
    assert marker.strip() == str(fresh / "openbao" / "audit.log")
