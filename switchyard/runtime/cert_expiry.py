"""When the certificates a process relies on expire, as a gauge on its ``/metrics``.

A process keeps the certificate it connected with until it restarts, and an expired one shows
only at its next NATS reconnect, which the server refuses: the process cannot reconnect at all.
So each process exports the not-after of its own NATS client certificate, read when it starts
(the one it presents), and of nats-server's, where its certificate directory holds it (the
local stack's; a container's bundle holds only its own). One sample per identity: bounded.
"""

from __future__ import annotations

from switchyard.bus.identities import SERVER_CERT
from switchyard.bus.tls import CertDir, not_after, tls_files
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics


def export_certificate_expiry(metrics: Metrics, cert_dir: CertDir, identity: str) -> None:
    """Set ``switchyard_tls_certificate_expiry_timestamp_seconds{identity}`` for ``identity``
    and for nats-server's certificate, each as found in ``cert_dir`` now."""
    gauge = metrics.gauge(
        sc.TLS_CERT_EXPIRY,
        "When a TLS certificate expires (unix seconds): this process's NATS client "
        "certificate (identity: its name), and nats-server's (identity: server) where this "
        "process can read it. Read at start: a renewed file counts after a restart.",
        (sc.IDENTITY,),
    )
    for name in dict.fromkeys((identity, SERVER_CERT)):
        ends = not_after(tls_files(cert_dir, name).cert)
        if ends is not None:
            gauge.labels(name).set(ends.timestamp())
