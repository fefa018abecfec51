"""Certificates: one per identity, idempotent issuing, private keys 0600, DNs the server maps."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from switchyard.bus.identities import SERVICE_IDENTITIES
from switchyard.stack.certs import CertificateAuthority, init_certificates, subject_dn

pytestmark = pytest.mark.unit


CLIENTS = [(i.name, i.zone.value.lower()) for i in SERVICE_IDENTITIES]


def test_init_creates_ca_server_and_every_identity(tmp_path: Path) -> None:
    results = init_certificates(
        tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS
    )
    names = [r.name for r in results]
    assert names[:3] == ["ca", "server", "route"]
    assert set(names[3:]) == {i.name for i in SERVICE_IDENTITIES}
    assert all(r.created for r in results)
    for ident in SERVICE_IDENTITIES:
        assert subject_dn(tmp_path / f"{ident.name}.pem") == ident.dn("Switchyard")
        mode = stat.S_IMODE((tmp_path / f"{ident.name}-key.pem").stat().st_mode)
        assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600


def test_init_is_idempotent_and_force_reissues(tmp_path: Path) -> None:
    init_certificates(tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS)
    before = (tmp_path / "tail.pem").read_bytes()
    again = init_certificates(
        tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS
    )
    assert not any(r.created for r in again)
    assert (tmp_path / "tail.pem").read_bytes() == before
    forced = init_certificates(
        tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS, force=True
    )
    assert all(r.created for r in forced[1:])
    assert not forced[0].created  # the CA is kept: everything it signed stays valid
    assert (tmp_path / "tail.pem").read_bytes() != before


def test_certificates_from_a_replaced_ca_are_reissued(tmp_path: Path) -> None:
    init_certificates(tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS)
    (tmp_path / "ca.pem").unlink()
    (tmp_path / "ca-key.pem").unlink()
    results = init_certificates(
        tmp_path, organization="Switchyard", validity_days=30, clients=CLIENTS
    )
    assert all(r.created for r in results)
    ca, _ = CertificateAuthority.load_or_create(tmp_path, "Switchyard", 30)
    assert ca.signed(x509.load_pem_x509_certificate((tmp_path / "head.pem").read_bytes()))


def test_server_certificate_names_loopback(tmp_path: Path) -> None:
    init_certificates(tmp_path, organization="Switchyard", validity_days=30, clients=[])
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_route_certificate_is_both_server_and_client(tmp_path: Path) -> None:
    """Cluster nodes dial each other: the route certificate must pass both checks."""
    init_certificates(
        tmp_path,
        organization="Switchyard",
        validity_days=30,
        clients=CLIENTS,
        server_hosts=("nats-1", "127.0.0.1"),
    )

    def usages(name: str) -> set[str]:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.pem").read_bytes())
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return {u.dotted_string for u in eku}

    server, client = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
    assert usages("route") == {server, client}
    assert usages("server") == {server}
    assert usages("tail") == {client}
    cert = x509.load_pem_x509_certificate((tmp_path / "route.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nats-1"]


def test_cli_init_and_issue(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    run = [sys.executable, "-m", "switchyard", "--home", str(tmp_path)]
    out = subprocess.run(
        [*run, "certs", "init", "--dir", str(certs)], capture_output=True, text=True, check=True
    )
    assert "created  tail" in out.stdout
    out = subprocess.run(
        [*run, "certs", "init", "--dir", str(certs)], capture_output=True, text=True, check=True
    )
    assert "kept     tail" in out.stdout
    out = subprocess.run(
        [*run, "certs", "issue", "billing-bot", "--dir", str(certs)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nats.internal_clients" in out.stdout  # tells the operator the remaining step
    assert subject_dn(certs / "billing-bot.pem") == "CN=billing-bot,OU=client,O=Switchyard"
    bad = subprocess.run(
        [*run, "certs", "issue", "Bad Name", "--dir", str(certs)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "not a valid identity name" in bad.stderr


def test_cli_issue_refuses_a_directory_without_a_ca_unless_asked_for_a_new_one(
    tmp_path: Path,
) -> None:
    """``certs issue NAME --dir DIR`` made a new CA in a DIR without one and signed with it:
    a certificate the stack's NATS refuses, with nothing said."""
    empty = tmp_path / "elsewhere"
    run = [sys.executable, "-m", "switchyard", "--home", str(tmp_path), "certs", "issue", "app"]
    refused = subprocess.run(
        [*run, "--dir", str(empty)], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1
    assert "ca.pem, ca-key.pem not found" in refused.stderr
    assert "--new-ca" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (empty / "app.pem").exists()
    assert not (empty / "ca.pem").exists()
    made = subprocess.run(
        [*run, "--dir", str(empty), "--new-ca"], capture_output=True, text=True, check=True
    )
    assert "created a new CA" in made.stdout
    ca = CertificateAuthority.load(empty)
    assert ca.signed(x509.load_pem_x509_certificate((empty / "app.pem").read_bytes()))
    again = subprocess.run(
        [*run, "--dir", str(empty), "--new-ca", "--force"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "created a new CA" not in again.stdout  # an existing CA is kept, --new-ca or not
    assert (empty / "ca.pem").read_bytes() == ca.cert.public_bytes(serialization.Encoding.PEM)
