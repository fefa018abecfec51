"""The CA is never replaced unasked: near its end it is kept (with a warning), past it the
start is refused, and ``certs init --rotate-ca`` replaces it on purpose, keeping the old one.

``up`` / ``certs init`` replaced a CA within 30 days of expiry silently: its key was
overwritten, and every client certificate issued from it (copies handed to internal clients,
other hosts' bundles) stopped working.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from switchyard.config import load_settings
from switchyard.errors import CertificateError
from switchyard.stack import containers
from switchyard.stack.certs import CertificateAuthority, init_certificates

pytestmark = pytest.mark.unit

ORG = "Switchyard"
CLIENTS = [("tail", "client"), ("billing-bot", "client")]


def _ca_ending_in(cert_dir: Path, days: float) -> bytes:
    """A CA (and identities it signed) whose certificate ends ``days`` from now; its PEM."""
    init_certificates(cert_dir, organization=ORG, validity_days=30, clients=CLIENTS)
    ca = CertificateAuthority.load(cert_dir)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3000))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (cert_dir / "ca.pem").write_bytes(pem)
    return pem


def test_a_ca_near_its_end_is_kept_with_what_it_signed(tmp_path: Path) -> None:
    pem = _ca_ending_in(tmp_path, days=10)
    key = (tmp_path / "ca-key.pem").read_bytes()
    bot = (tmp_path / "billing-bot.pem").read_bytes()
    results = init_certificates(tmp_path, organization=ORG, validity_days=30, clients=CLIENTS)
    assert not results[0].created
    assert (tmp_path / "ca.pem").read_bytes() == pem
    assert (tmp_path / "ca-key.pem").read_bytes() == key
    assert (tmp_path / "billing-bot.pem").read_bytes() == bot
    assert not (tmp_path / "ca-key.pem.old").exists()


def test_an_expired_ca_is_refused_naming_the_command_that_replaces_it(tmp_path: Path) -> None:
    pem = _ca_ending_in(tmp_path, days=-1)
    key = (tmp_path / "ca-key.pem").read_bytes()
    with pytest.raises(CertificateError) as info:
        init_certificates(tmp_path, organization=ORG, validity_days=30, clients=CLIENTS)
    assert "expired" in str(info.value)
    assert "certs init" in str(info.value)
    assert "--rotate-ca" in str(info.value)
    assert (tmp_path / "ca.pem").read_bytes() == pem
    assert (tmp_path / "ca-key.pem").read_bytes() == key


def test_rotating_the_ca_keeps_the_old_one_and_reissues_everything(tmp_path: Path) -> None:
    pem = _ca_ending_in(tmp_path, days=-1)
    key = (tmp_path / "ca-key.pem").read_bytes()
    results = init_certificates(
        tmp_path, organization=ORG, validity_days=30, clients=CLIENTS, rotate_ca=True
    )
    assert all(r.created for r in results)
    assert (tmp_path / "ca.pem.old").read_bytes() == pem
    assert (tmp_path / "ca-key.pem.old").read_bytes() == key
    assert os.stat(tmp_path / "ca-key.pem.old").st_mode & 0o077 == 0
    ca = CertificateAuthority.load(tmp_path)
    assert ca.cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=3000)
    for name in ("server", "route", "tail", "billing-bot"):
        assert ca.signed(x509.load_pem_x509_certificate((tmp_path / f"{name}.pem").read_bytes()))


def test_the_cli_warns_of_a_ca_near_its_end_and_rotates_it_on_purpose(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    run = [sys.executable, "-m", "switchyard", "--home", str(tmp_path), "certs", "init"]
    _ca_ending_in(certs, days=10)
    out = subprocess.run(
        [*run, "--dir", str(certs)], capture_output=True, text=True, check=True, timeout=60
    )
    assert "kept     ca" in out.stdout
    assert "warning: the CA expires on" in out.stderr
    assert "--rotate-ca" in out.stderr
    out = subprocess.run(
        [*run, "--dir", str(certs), "--rotate-ca"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "created  ca" in out.stdout
    assert "warning" not in out.stderr
    assert (certs / "ca-key.pem.old").is_file()


def test_deploy_setup_rotates_the_ca_on_purpose_and_fills_the_bundles_again(
    tmp_path: Path,
) -> None:
    """A container deployment's CA lives in the private state; ``deploy setup --rotate-ca``
    replaces it with the server certificates still naming the NATS nodes."""
    layout = containers.DeployLayout(state=tmp_path / "state", bundles=tmp_path / "bundles")
    settings = load_settings(None, env={})
    containers.setup(settings, layout)
    old = (layout.bundle("tail") / "ca.pem").read_bytes()
    _ca_ending_in(layout.certs, days=-1)
    with pytest.raises(CertificateError):
        containers.setup(settings, layout)
    containers.setup(settings, layout, rotate_ca=True)
    assert (layout.certs / "ca-key.pem.old").is_file()
    ca = CertificateAuthority.load(layout.certs)
    assert (layout.bundle("tail") / "ca.pem").read_bytes() not in (old, b"")
    tail = x509.load_pem_x509_certificate((layout.bundle("tail") / "tail.pem").read_bytes())
    assert ca.signed(tail)
    server = x509.load_pem_x509_certificate((layout.bundle("nats") / "server.pem").read_bytes())
    assert ca.signed(server)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "nats-1" in san.get_values_for_type(x509.DNSName)
