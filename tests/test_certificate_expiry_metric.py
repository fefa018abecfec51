"""Every worker and edge of a running stack exports when its NATS certificate and nats-server's end
(``switchyard_tls_certificate_expiry_timestamp_seconds``), the series the alert
SwitchyardCertificateExpiring reads; nothing exported it before."""

from __future__ import annotations

import pytest
from cryptography import x509

from tests.stacks import Stack

pytestmark = pytest.mark.integration

METRIC = "switchyard_tls_certificate_expiry_timestamp_seconds"


async def test_each_worker_exports_its_certificates_end(stack: Stack) -> None:
    certs = stack.settings.certs_dir

    def ends(name: str) -> float:
        cert = x509.load_pem_x509_certificate((certs / f"{name}.pem").read_bytes())
        return cert.not_valid_after_utc.timestamp()

    for worker in ("head", "secrets", "control", "tail", "gateway"):
        found = {
            labels["identity"]: value
            for name, labels, value in await stack.samples(worker)
            if name == METRIC
        }
        assert found == {worker: ends(worker), "server": ends("server")}, worker
