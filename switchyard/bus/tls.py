"""Where an identity's certificate, key and the project CA live, as every process looks for them.

The layout (``<name>.pem``, ``<name>-key.pem``, ``ca.pem`` in one directory) is part of the
deployment contract: ``switchyard certs`` writes it, a compose init job or a Kubernetes secret
mounts it, and every process reads it through :func:`require_tls_files`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from switchyard.errors import CertificateError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of one identity's certificate, key, and the CA that verifies peers."""

    cert: Path
    key: Path
    ca: Path


# A directory as callers give it: a Path, or a string from a YAML file or a Python caller.
CertDir = str | os.PathLike[str]


def tls_files(cert_dir: CertDir, name: str) -> TlsFiles:
    """Where ``name``'s certificate and key live (they may not exist yet).

    Every path to an identity's files is made here, so this is where a ``str`` directory
    becomes a :class:`~pathlib.Path` (``"certs" / "x.pem"`` would be a TypeError).
    """
    cert_dir = Path(cert_dir)
    return TlsFiles(cert_dir / f"{name}.pem", cert_dir / f"{name}-key.pem", cert_dir / "ca.pem")


def require_tls_files(cert_dir: CertDir, name: str) -> TlsFiles:
    """Like :func:`tls_files`, but fail clearly when any file is missing.

    Raises:
        CertificateError: naming the missing file and the command that creates it.
    """
    files = tls_files(cert_dir, name)
    for path in (files.cert, files.key, files.ca):
        if not path.is_file():
            raise CertificateError(
                f"{path} is missing; run `switchyard certs init --dir {cert_dir}` "
                f"(or `switchyard certs issue {name}` for an extra identity)"
            )
    return files


def not_after(cert_path: CertDir) -> dt.datetime | None:
    """When the PEM certificate at ``cert_path`` expires (UTC); None when there is none or it
    cannot be read (its absence is reported where the certificate is used)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc
