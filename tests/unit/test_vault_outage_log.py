"""The secrets service says when it loses Vault: once, then at most every ``WARN_EVERY_S``,
at once when the kind of failure changes, never with a token.

An explorer counted ~800 ``vault_unavailable`` answers over three outages and not one log line,
while the SwitchyardVaultUnavailable runbook sends operators to this log. Getting Vault back
is logged too (tests/test_key_outage.py, with a real OpenBao).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from switchyard.errors import VaultUnavailable
from switchyard.secrets import vault as vault_module
from switchyard.secrets.vault import Vault
from tests.support import free_port, write_settings

pytestmark = pytest.mark.unit

TOKEN = "s.never-in-a-log-" + "x" * 16


def _vault(tmp_path: Path) -> tuple[Vault, Path]:
    """A Vault client in token mode, at a port nothing listens on, with no token file yet."""
    token = tmp_path / "token"
    ca = tmp_path / "ca.pem"
    ca.write_text("", encoding="utf-8")
    openbao = {
        "addr": f"https://127.0.0.1:{free_port()}",
        "auth": "token",
        "token_file": str(token),
        "ca_file": str(ca),
        "timeout_s": 2,
    }
    settings, _ = write_settings(tmp_path / "home", {"openbao": openbao})
    return Vault(settings), token


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _fails(vault: Vault) -> str:
    with pytest.raises(VaultUnavailable) as failed:
        vault._call(lambda: None)
    return str(failed.value)


def test_losing_vault_is_logged_once_per_period_and_per_kind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault_module, "WARN_EVERY_S", 1.5)
    caplog.set_level(logging.INFO, logger="switchyard.secrets.vault")
    vault, token = _vault(tmp_path)

    # Its credentials cannot be read: said once, however often it is asked.
    assert "cannot read Vault credentials" in _fails(vault)
    assert "cannot read Vault credentials" in _fails(vault)
    (first,) = _warnings(caplog)
    assert "cannot read Vault credentials" in first
    assert "provider keys cannot be read or changed" in first

    # Another kind of failure (unreachable) is said at once, then not per request (the
    # calls within FAIL_FAST_S fail without trying).
    token.write_text(TOKEN, encoding="utf-8")
    assert "unreachable" in _fails(vault)
    for _ in range(5):
        _fails(vault)
    assert len(_warnings(caplog)) == 2
    assert "Vault/OpenBao is unreachable: ConnectionError" in _warnings(caplog)[1]

    # Still down after the period: said again.
    time.sleep(vault_module.FAIL_FAST_S + 0.6)
    _fails(vault)
    assert len(_warnings(caplog)) == 3
    assert TOKEN not in caplog.text


def test_a_token_lying_around_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hvac takes ``$VAULT_TOKEN`` (or ``~/.vault-token``, which an operator's ``bao login``
    leaves) when it is given none: the secrets service then ran on that token, not its own."""
    monkeypatch.setenv("VAULT_TOKEN", "s.someone-elses-token")
    vault, _ = _vault(tmp_path)
    assert "cannot read Vault credentials" in _fails(vault)  # its own token file, still absent
