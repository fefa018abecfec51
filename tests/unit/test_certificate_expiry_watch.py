"""Certificate lifetimes are watched: every worker exports when its NATS certificate (and
nats-server's, where it can read it) ends, and ``switchyard status`` names every certificate in
the home that ends within 30 days.

Nothing did: a certificate issued for ``certs.validity_days`` ended unnoticed, and showed only
when its process could not reconnect to NATS.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from prometheus_client.parser import text_string_to_metric_families

from switchyard.config import load_settings
from switchyard.runtime.cert_expiry import export_certificate_expiry
from switchyard.runtime.metrics import Metrics
from switchyard.stack import commands
from switchyard.stack.certs import CertificateAuthority, init_certificates
from switchyard.stack.home import StackHome

pytestmark = pytest.mark.unit

METRIC = "switchyard_tls_certificate_expiry_timestamp_seconds"


def _ends(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


def _samples(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["identity"]: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == METRIC
    }


def test_a_worker_exports_when_its_certificate_and_nats_servers_end(tmp_path: Path) -> None:
    init_certificates(tmp_path, organization="S", validity_days=20, clients=[("head", "core")])
    metrics = Metrics("head")
    export_certificate_expiry(metrics, tmp_path, "head")
    assert _samples(metrics) == {
        "head": _ends(tmp_path / "head.pem"),
        "server": _ends(tmp_path / "server.pem"),
    }


def test_a_bundle_without_nats_servers_certificate_exports_its_own(tmp_path: Path) -> None:
    init_certificates(tmp_path, organization="S", validity_days=20, clients=[("tail", "client")])
    (tmp_path / "server.pem").unlink()  # a container's bundle: its own files and the CA
    metrics = Metrics("tail")
    export_certificate_expiry(metrics, tmp_path, "tail")
    assert _samples(metrics) == {"tail": _ends(tmp_path / "tail.pem")}


def _status(home: Path, *, as_json: bool) -> str:
    settings = load_settings(None, env={"SWITCHYARD_HOME": str(home)})
    state = StackHome(settings.home_dir).state_file
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"status": "healthy", "supervisor_pid": os.getpid()}))
    out = io.StringIO()
    commands.status(settings, as_json=as_json, out=out)
    return out.getvalue()


def _issued_long_ago(certs: Path, name: str, days_left: float) -> None:
    """Re-sign ``name``'s certificate as if issued 813 days ago, ending ``days_left`` from now."""
    ca = CertificateAuthority.load(certs)
    old = x509.load_pem_x509_certificate((certs / f"{name}.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=813))
        .not_valid_after(now + dt.timedelta(days=days_left))
        .sign(ca.key, hashes.SHA256())
    )
    (certs / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_status_names_the_certificates_that_end_within_30_days(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    clients = [("head", "core"), ("tail", "client")]
    init_certificates(certs, organization="S", validity_days=825, clients=clients)
    _issued_long_ago(certs, "head", days_left=12)
    _issued_long_ago(certs, "tail", days_left=45)  # not yet
    doc = json.loads(_status(tmp_path, as_json=True))
    found = {c["name"]: c for c in doc["certificates_expiring"]}
    assert set(found) == {"head"}
    head = found["head"]
    assert 11.9 <= head["days_left"] <= 12
    ends = dt.datetime.fromisoformat(head["expires_at"]).timestamp()
    assert abs(ends - _ends(certs / "head.pem")) < 1
    assert doc["status"] == "healthy"  # a warning: the headline stays what the probes say
    text = _status(tmp_path, as_json=False)
    assert "! certificate head expires on" in text
    assert "(in 12 days)" in text or "(in 11.9 days)" in text
    assert "switchyard down`, then `switchyard up`" in text
    assert "certificate tail" not in text
    assert "certificate ca " not in text


def test_status_says_nothing_of_certificates_far_from_their_end(tmp_path: Path) -> None:
    """A short-lived certificate counts in the last third of its life, when ``up`` renews it:
    "renew it" is then what a restart does."""
    init_certificates(tmp_path / "certs", organization="S", validity_days=12, clients=[])
    doc = json.loads(_status(tmp_path, as_json=True))
    assert doc["certificates_expiring"] == []
    assert "certificate" not in _status(tmp_path, as_json=False)
