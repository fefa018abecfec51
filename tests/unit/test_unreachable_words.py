"""A provider that cannot be reached is said plainly (providers/connect_failure), and a
failed attempt's summary is never cut mid-word (reroutes.attempt_summary)."""

from __future__ import annotations

import socket
import ssl

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from switchyard.errors import ProviderUnreachable
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.connect_failure import closed_early, describe
from switchyard.workers.modelproxy.reroutes import attempt_summary

pytestmark = pytest.mark.unit


def _key(host: str, port: int) -> ConnectionKey:
    context = ssl.create_default_context()  # aiohttp's own, for an http:// address too
    return ConnectionKey(host, port, False, context, None, None, None)


def _as_litellm_passes_it(error: aiohttp.ClientConnectorError) -> Exception:
    """aiohttp's error as litellm passes it on: in httpx's ConnectError, in its own."""
    wrapped = httpx.ConnectError(str(error))
    wrapped.__cause__ = error
    outer = RuntimeError(f"AnthropicException - {wrapped}")
    outer.__cause__ = wrapped
    return outer


def test_a_refused_connection_names_the_address_and_the_reason() -> None:
    """It read `ConnectError: Cannot connect to host 127.0.0.1:31100 ssl:<ssl.SSLContext
    object at 0x7f0d...> [Connect call failed ('127.0.0.1', 31100)]`: a repr, a TLS hint
    for an http:// address, asyncio's words for the reason."""
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 31100)")
    error = aiohttp.ClientConnectorError(_key("127.0.0.1", 31100), refused)

    for exc in (error, _as_litellm_passes_it(error)):
        assert describe(exc) == "cannot connect to 127.0.0.1:31100 (connection refused)"
    failure = ue.connection_failed("fake-anth", error)
    assert isinstance(failure, ProviderUnreachable)
    assert failure.message == (
        "provider fake-anth is unreachable: cannot connect to 127.0.0.1:31100 (connection refused)"
    )


def test_a_name_that_does_not_resolve_says_so() -> None:
    unknown = socket.gaierror(-2, "Name or service not known")
    error = aiohttp.ClientConnectorDNSError(_key("api.example.invalid", 443), unknown)

    assert (
        describe(error) == "cannot connect to api.example.invalid:443 (name or service not known)"
    )


def test_a_refused_certificate_says_why() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    error = aiohttp.ClientConnectorCertificateError(_key("10.0.0.5", 8443), cert)

    assert describe(error) == (
        "cannot connect to 10.0.0.5:8443 (TLS certificate not accepted: self-signed certificate)"
    )


def test_an_httpx_failure_names_its_request_address() -> None:
    request = httpx.Request("POST", "https://api.mistral.ai/v1/chat/completions")
    exc = httpx.ConnectError("[Errno 111] Connection refused", request=request)
    exc.__cause__ = OSError(111, "Connection refused")

    assert describe(exc) == "cannot connect to api.mistral.ai:443 (connection refused)"


def _as_litellm_maps(error: aiohttp.ClientError, to: type[httpx.RequestError]) -> Exception:
    """aiohttp's error as litellm's transport maps it (to ``to``, for a request), in its own."""
    request = httpx.Request("POST", "http://127.0.0.1:31100/v1/messages")
    mapped = to(str(error), request=request)
    mapped.__cause__ = error
    outer = RuntimeError(f"AnthropicException - {mapped}")
    outer.__cause__ = mapped
    return outer


def test_a_connection_closed_mid_answer_is_not_a_failure_to_connect() -> None:
    """litellm maps aiohttp's ServerDisconnectedError and ClientPayloadError (a stream cut
    mid-answer) to httpx's ReadError, whose request names the address: it read `cannot
    connect to 127.0.0.1:31100`, for a provider that was reached."""
    for error in (aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut")):
        exc = _as_litellm_maps(error, httpx.ReadError)
        assert closed_early(exc)
        assert "cannot connect" not in describe(exc)
    request = httpx.Request("POST", "http://127.0.0.1:31100/v1/messages")
    for kind in (httpx.RemoteProtocolError, httpx.WriteError):
        assert closed_early(kind("cut", request=request))
        assert "cannot connect" not in describe(kind("cut", request=request))


def test_a_connection_never_made_is_not_closed_early() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 31100)")
    error = aiohttp.ClientConnectorError(_key("127.0.0.1", 31100), refused)
    request = httpx.Request("POST", "https://api.mistral.ai/v1/chat/completions")

    assert not closed_early(_as_litellm_maps(error, httpx.ConnectError))
    assert not closed_early(httpx.ConnectTimeout("timed out", request=request))
    assert describe(httpx.ConnectTimeout("timed out", request=request)) == (
        "cannot connect to api.mistral.ai:443"
    )


def test_an_attempt_summary_is_cut_after_a_whole_word() -> None:
    exc = ProviderUnreachable("provider p is unreachable: " + "word " * 60, provider="p")

    summary = attempt_summary("route/deployment:0", exc)

    assert len(summary) <= 200
    assert summary.endswith("word...")
    short = ProviderUnreachable("provider p is unreachable: cannot connect", provider="p")
    assert attempt_summary("d", short) == "d: 502 provider p is unreachable: cannot connect"
