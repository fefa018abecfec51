"""The project's certificate authority and the certificates of every identity.

nats-server maps a client certificate's subject DN to a NATS user, so the certificate *is* the
login: one per service identity, issued by a CA that only this project trusts. Issuing is
idempotent: a valid certificate is never overwritten unless asked (``--force``). Private keys are
written 0600. ECDSA P-256 keeps TLS handshakes cheap.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from switchyard.bus.identities import SERVER_CERT
from switchyard.bus.tls import TlsFiles, tls_files
from switchyard.errors import CertificateError

CA_NAME = "ca"
# Re-issue identity certificates that expire within this window (never the CA: see
# ``CertificateAuthority.load_or_create``).
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
# The certificate nodes of a NATS cluster present to each other on route connections (each end
# is server and client, and verifies the other against the CA); not a NATS user.
ROUTE_CERT = "route"


@dataclass(frozen=True, slots=True)
class IssueResult:
    name: str
    path: Path
    created: bool  # False when a valid certificate was kept


def _subject(cn: str, ou: str, organization: str) -> x509.Name:
    # X.509 order is most-significant first; RFC 2253 prints it reversed as CN=..,OU=..,O=..
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """The project CA: loads it from ``cert_dir`` or creates it once."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def load_or_create(
        cls, cert_dir: Path, organization: str, validity_days: int, *, rotate: bool = False
    ) -> tuple[CertificateAuthority, bool]:
        """The CA in ``cert_dir``, creating it if absent. Returns (ca, created).

        A CA is never replaced unasked: every certificate it signed (copies handed to internal
        clients, other hosts' bundles) stops working with it. One near its end is kept (the
        status says when it expires); one past it is refused.

        Args:
            rotate: replace the CA on purpose; the old one is kept as ``ca.pem.old`` and
                ``ca-key.pem.old``.

        Raises:
            CertificateError: the CA has expired and ``rotate`` was not asked.
        """
        cert_dir.mkdir(parents=True, exist_ok=True)
        files = tls_files(cert_dir, CA_NAME)
        if not missing_ca_files(cert_dir):
            if rotate:
                for path in (files.cert, files.key):
                    os.replace(path, path.with_name(path.name + ".old"))
            else:
                found = cls.load(cert_dir)
                ends = found.cert.not_valid_after_utc
                if ends <= dt.datetime.now(dt.UTC):
                    raise CertificateError(
                        f"the CA in {cert_dir} expired on {ends:%Y-%m-%d %H:%M} UTC: nothing "
                        "it signed is trusted any more. Replace it on purpose with `switchyard "
                        f"certs init --dir {cert_dir} --rotate-ca` (the old one is kept as "
                        "ca.pem.old), then restart every process and hand the new client "
                        "certificates to internal clients (docs/operations.md, Certificates)"
                    )
                return found, False
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _subject(f"{organization} CA", "ca", organization)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=max(validity_days, 3650)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(files.key, _key_pem(key))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key), True

    @classmethod
    def load(cls, cert_dir: Path) -> CertificateAuthority:
        """The CA already in ``cert_dir``, as it is (never created nor renewed here: a
        certificate from a CA the stack does not trust is useless, so making one is a choice).

        Raises:
            CertificateError: its certificate or key is missing, or the key is not EC.
        """
        missing = missing_ca_files(cert_dir)
        if missing:
            raise CertificateError(f"no CA in {cert_dir}: {', '.join(map(str, missing))} missing")
        files = tls_files(cert_dir, CA_NAME)
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{files.key} is not an EC private key")
        return cls(cert, key)

    def signed(self, cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def issue(
        self,
        cert_dir: Path,
        name: str,
        *,
        cn: str,
        ou: str,
        organization: str,
        validity_days: int,
        server: bool = False,
        peer: bool = False,
        hosts: tuple[str, ...] = SERVER_HOSTS,
        force: bool = False,
    ) -> IssueResult:
        """Issue ``<name>.pem``/``<name>-key.pem`` unless a valid one with the same subject exists.

        Args:
            server: issue a TLS server certificate for ``hosts`` instead of a client one.
            peer: with ``server``, also valid as a client certificate (cluster routes).
            force: re-issue even if the current certificate is valid.
        """
        files = tls_files(cert_dir, name)
        subject = _subject(cn, ou, organization)
        if not force and self._still_valid(files, subject):
            return IssueResult(name, files.cert, created=False)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if peer or not server:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        expires = now + dt.timedelta(days=validity_days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # A negative validity issues an already expired certificate (refusal tests).
            .not_valid_before(min(now - dt.timedelta(minutes=5), expires - dt.timedelta(days=1)))
            .not_valid_after(expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        _write_private(files.key, _key_pem(key))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return IssueResult(name, files.cert, created=True)

    def _still_valid(self, files: TlsFiles, subject: x509.Name) -> bool:
        if not (files.cert.is_file() and files.key.is_file()):
            return False
        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        except ValueError:
            return False
        return cert.subject == subject and self.signed(cert) and not _due_for_renewal(cert)


def missing_ca_files(cert_dir: Path) -> list[Path]:
    """The CA's certificate and key files absent from ``cert_dir`` (none: it has a CA)."""
    files = tls_files(cert_dir, CA_NAME)
    return [path for path in (files.cert, files.key) if not path.is_file()]


def ca_ends_soon(cert_dir: Path) -> dt.datetime | None:
    """When the CA in ``cert_dir`` expires, if that is within RENEW_BEFORE (else None)."""
    cert = x509.load_pem_x509_certificate(tls_files(cert_dir, CA_NAME).cert.read_bytes())
    return cert.not_valid_after_utc if _due_for_renewal(cert) else None


def expiring(cert_dir: Path, now: dt.datetime | None = None) -> list[tuple[str, dt.datetime]]:
    """(name, not-after) of each certificate in ``cert_dir`` due for renewal (what ``up``
    would issue again) or expired, soonest first (``ca.pem.old`` and the like not counted)."""
    found = []
    for path in sorted(cert_dir.glob("*.pem")):
        if path.name.endswith("-key.pem"):
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        if _due_for_renewal(cert, now):
            found.append((path.name.removesuffix(".pem"), cert.not_valid_after_utc))
    return sorted(found, key=lambda item: item[1])


def _due_for_renewal(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    """True within RENEW_BEFORE of expiry (or the last third of a short-lived certificate)."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    window = min(RENEW_BEFORE, lifetime / 3)
    return cert.not_valid_after_utc - window <= (now or dt.datetime.now(dt.UTC))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def subject_dn(cert_path: Path) -> str:
    """A certificate's subject in RFC 2253/4514 order (what ``verify_and_map`` matches)."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string()


def init_certificates(
    cert_dir: Path,
    *,
    organization: str,
    validity_days: int,
    clients: list[tuple[str, str]],
    server_hosts: tuple[str, ...] = SERVER_HOSTS,
    force: bool = False,
    rotate_ca: bool = False,
) -> list[IssueResult]:
    """Create the CA (if needed), the server and route certificates, and one client
    certificate per identity.

    Args:
        clients: ``(name, ou)`` pairs; the DN is ``CN=<name>,OU=<ou>,O=<organization>``.
        force: re-issue every identity certificate (the CA is kept while valid).
        rotate_ca: replace the CA (kept as ``ca.pem.old``), and so every certificate.

    Returns:
        One result per certificate, CA first, saying whether it was created or kept.
    """
    ca, ca_created = CertificateAuthority.load_or_create(
        cert_dir, organization, validity_days, rotate=rotate_ca
    )
    results = [IssueResult(CA_NAME, tls_files(cert_dir, CA_NAME).cert, created=ca_created)]
    results.append(
        ca.issue(
            cert_dir,
            SERVER_CERT,
            cn=SERVER_CERT,
            ou=SERVER_CERT,
            organization=organization,
            validity_days=validity_days,
            server=True,
            hosts=server_hosts,
            force=force or ca_created,
        )
    )
    results.append(
        ca.issue(
            cert_dir,
            ROUTE_CERT,
            cn=ROUTE_CERT,
            ou=ROUTE_CERT,
            organization=organization,
            validity_days=validity_days,
            server=True,
            peer=True,
            hosts=server_hosts,
            force=force or ca_created,
        )
    )
    for name, ou in clients:
        results.append(
            ca.issue(
                cert_dir,
                name,
                cn=name,
                ou=ou,
                organization=organization,
                validity_days=validity_days,
                force=force or ca_created,
            )
        )
    return results
