"""A service whose certificate the NATS server does not know must fail to start, saying why,
not wait for ever (nats-py retries a refused first login without end)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.errors import BusUnreachable
from switchyard.stack.certs import CertificateAuthority, init_certificates
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_service_identity_the_server_does_not_know_fails_fast(stack: Stack) -> None:
    settings = stack.settings
    ca, _ = CertificateAuthority.load_or_create(
        settings.certs_dir, settings.certs.organization, settings.certs.validity_days
    )
    ca.issue(
        settings.certs_dir,
        "stranger",
        cn="stranger",
        ou="client",
        organization=settings.certs.organization,
        validity_days=1,
    )
    started = time.monotonic()
    with pytest.raises(BusUnreachable, match=r"(?i)authorization violation") as refused:
        # A service's settings: unlimited reconnects. The bound only keeps a regression
        # from hanging the suite.
        await asyncio.wait_for(connect(settings.nats_servers, settings.certs_dir, "stranger"), 60)
    assert refused.value.identity == "stranger"
    assert refused.value.refused  # the CLI's exit code 1, not 3 ("try again later")
    assert time.monotonic() - started < 30


async def test_an_internal_client_not_in_the_settings_is_told_which_setting_admits_it(
    stack: Stack,
) -> None:
    """A certificate issued with `switchyard certs issue` but not added to
    ``nats.internal_clients``: the error named only the refusal ("Authorization Violation",
    or a bare "Broken pipe"), not the certificate nor what to do."""
    settings = stack.settings
    ca, _ = CertificateAuthority.load_or_create(
        settings.certs_dir, settings.certs.organization, settings.certs.validity_days
    )
    ca.issue(
        settings.certs_dir,
        "billing-bot",
        cn="billing-bot",
        ou="client",
        organization=settings.certs.organization,
        validity_days=1,
    )
    for one_shot in (True, False):
        with pytest.raises(BusUnreachable) as refused:
            await asyncio.wait_for(
                connect(
                    settings.nats_servers,
                    settings.certs_dir,
                    "billing-bot",
                    max_reconnect_attempts=0 if one_shot else -1,
                ),
                60,
            )
        said = str(refused.value)
        organization = settings.certs.organization
        assert f"(subject CN=billing-bot,OU=client,O={organization})" in said
        assert "add `billing-bot` to `nats.internal_clients`" in said
        assert str(settings.certs_dir / "billing-bot.pem") in said


async def test_a_cli_with_another_stacks_certificates_fails_fast(
    stack: Stack, tmp_path: Path
) -> None:
    """A newcomer's second home (its own CA) pointed at the first stack's ports: `keys list`
    hung for over ten minutes (the TLS handshake fails on every attempt, which nats-py retried
    without end). A one-shot caller now fails within seconds, saying why."""
    settings = stack.settings
    init_certificates(
        tmp_path,
        organization=settings.certs.organization,
        validity_days=1,
        clients=identities.certificate_subjects(()),
    )
    started = time.monotonic()
    with pytest.raises(BusUnreachable) as refused:
        await asyncio.wait_for(
            connect(settings.nats_servers, tmp_path, "provisioner", max_reconnect_attempts=0), 60
        )
    assert time.monotonic() - started < 15
    assert "not one this home's certificate authority signed" in str(refused.value)
    assert refused.value.refused


async def test_routes_sync_exit_code_is_1_when_the_check_fails_not_the_drift_code(
    stack: Stack, tmp_path: Path
) -> None:
    """`routes sync --exit-code` exited 1 for drift and 1 for a check that could not run, so a
    drift job could not tell "the table differs" from "nothing was checked". Drift is 4 now
    (tests/test_cli_stack.py); a check the stack refuses (another CA's certificate) stays 1."""
    config = tmp_path / "switchyard.yaml"
    doc = {
        "home": str(tmp_path / "home"),
        "nats": {"servers": list(stack.settings.nats_servers)},
        "routes": {"drifted": {"deployments": [{"provider": "demo", "model": "demo"}]}},
    }
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "switchyard", "--config", str(config), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    made = await asyncio.to_thread(cli, "certs", "init")  # this home's own CA
    assert made.returncode == 0, made.stderr
    checked = await asyncio.to_thread(cli, "routes", "sync", "--exit-code")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "certificate" in checked.stderr
