"""Identity and TLS refusals proven from outside, each as the specific error the server gives.

Completes ``tests/test_zones.py`` (no certificate, another CA, an unmapped name, the server's
own certificate): an expired certificate, and every CLIENT identity trying to read replies that
are not its own or to write where only CORE may (dispatch queues, secret values, KV buckets,
the JetStream API of CORE's streams). Permission refusals arrive asynchronously in nats-py, as
``nats: permissions violation for <publish|subscription> to "<subject>"`` on ``error_cb``;
TLS refusals are read from the server's own log, where the reason is named.
"""

from __future__ import annotations

import ssl

import pytest

from switchyard.stack.certs import CertificateAuthority
from tests.support import settle
from tests.test_zones import ORG, Zone, _as, _refused, _tls, zone  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

CLIENTS = ("tail", "gateway", "admin", "app")
INBOXES = ("_INBOX.>", "_INBOX.abc", "_R_.>", *(f"_INBOX_{n}.>" for n in (*CLIENTS, "head")))
CORE_ONLY = (
    "llm.v1.dispatch.demo--demo",
    "llm.v1.dispatch.>",
    "secrets.v1.get.openai",
    "$KV.sy_routes.table",
    "$KV.sy_health.cd.x",
    "$JS.API.DIRECT.GET.KV_sy_routes.$KV.sy_routes.table",
    "$JS.API.STREAM.PURGE.DISPATCH",
    "$JS.API.CONSUMER.MSG.NEXT.DISPATCH.dep-x",
    "llm.v1.usage",
    "llm.v1.reroute",
)


async def test_expired_certificate_is_refused(zone: Zone) -> None:  # noqa: F811
    ca, _ = CertificateAuthority.load_or_create(zone.cert_dir, ORG, 30)
    # The real tail's name and CA; only its validity is wrong.
    ca.issue(
        zone.cert_dir, "tail-expired", cn="tail", ou="client", organization=ORG, validity_days=-1
    )
    ctx = _tls(
        zone.cert_dir / "tail-expired.pem",
        zone.cert_dir / "tail-expired-key.pem",
        zone.cert_dir / "ca.pem",
    )
    logs = "x509: certificate has expired or is not yet valid"
    err, logged = await _refused(zone, ctx, logs)  # (waits until the server logged it)
    assert isinstance(err, ConnectionResetError | BrokenPipeError | ssl.SSLError), repr(err)
    assert logs in logged


@pytest.mark.parametrize("identity", CLIENTS)
async def test_client_identity_cannot_read_other_replies(zone: Zone, identity: str) -> None:  # noqa: F811
    nc, violations = await _as(zone, identity)
    try:
        others = [s for s in INBOXES if s != f"_INBOX_{identity}.>"]
        for subject in others:
            await nc.subscribe(subject)
        await settle(nc, 0.3)
        for subject in others:
            expected = f'nats: permissions violation for subscription to "{subject.lower()}"'
            assert expected in violations.errors, (identity, subject, violations.errors)
    finally:
        await nc.close()


@pytest.mark.parametrize("identity", CLIENTS)
async def test_client_identity_cannot_write_core_subjects(zone: Zone, identity: str) -> None:  # noqa: F811
    nc, violations = await _as(zone, identity)
    try:
        for subject in CORE_ONLY:
            await nc.publish(subject, b"{}")
        await settle(nc, 0.3)
        for subject in CORE_ONLY:
            expected = f'nats: permissions violation for publish to "{subject.lower()}"'
            assert expected in violations.errors, (identity, subject, violations.errors)
    finally:
        await nc.close()
