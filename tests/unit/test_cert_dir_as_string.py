"""A certificate directory given as a string (from a YAML file, or a Python caller of
``connect``) works as a Path does: it was a TypeError (``str / str``) before any file was read."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from switchyard.bus.connect import client_tls
from switchyard.bus.tls import require_tls_files, tls_files
from switchyard.errors import CertificateError
from switchyard.stack.certs import init_certificates

pytestmark = pytest.mark.unit


def test_tls_files_of_a_string_directory_are_paths() -> None:
    files = tls_files("certs/here", "billing-bot")
    assert files.cert == Path("certs/here/billing-bot.pem")
    assert files.key == Path("certs/here/billing-bot-key.pem")
    assert files.ca == Path("certs/here/ca.pem")


def test_a_missing_file_in_a_string_directory_is_named_not_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"billing-bot\.pem is missing"):
        require_tls_files(str(tmp_path), "billing-bot")


def test_a_client_tls_context_from_a_string_directory(tmp_path: Path) -> None:
    init_certificates(
        tmp_path, organization="Switchyard", validity_days=2, clients=[("billing-bot", "client")]
    )
    ctx = client_tls(str(tmp_path), "billing-bot")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
