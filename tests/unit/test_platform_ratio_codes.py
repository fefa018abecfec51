"""The platform ratios of the ops pack count what the Overview and ``switchyard top`` count.

Those count the edges' answers by the status class of what the client got (a stream that
failed after its 200 by its error's status). Prometheus has that only as the edges' GenAI
histogram's ``error_type`` (a Switchyard code), so the recording rules select the codes
answered with a 5xx or a 429. Every code Switchyard sets (``OWN_CODES``) is listed here with
its status class: a new code fails this test until someone decides where it counts. The
dashboard's "Edge responses by status" panel selects the LLM routes the edges serve, no more
(the admin UI's sign-in and file uploads are POSTs too)."""

from __future__ import annotations

import re

import pytest

from switchyard.ingress.fastpath import ROUTES
from switchyard.runtime.error_labels import OWN_CODES
from tests.opspack import dashboard_queries, rules

SERVER_ERRORS = {
    "admin_disabled", "all_deployments_failed", "deadline_exceeded",
    "deadline_too_short", "deployment_removed", "deployments_cooling_down", "edge_stopping",
    "file_storage_full", "head_stopping", "invalid_upstream_reply", "items_unavailable",
    "keys_unavailable",
    "limits_unavailable", "no_answer", "no_deployment", "no_workers", "provider_auth_error",
    "provider_disconnected", "provider_error", "provider_model_not_found", "provider_overloaded",
    "provider_redirect",
    "provider_timeout", "provider_unreachable", "queue_full", "queue_unavailable",
    "replay_unavailable", "response_owners_unavailable", "secret_unavailable", "secrets_error",
    "service_unavailable", "spend_unavailable", "starting", "stopping", "stream_interrupted",
    "tokenizer_unavailable", "upgrade_unfinished", "upstream_not_allowed", "vault_unavailable",
    "worker_stopped",
}  # fmt: skip
REFUSALS = {
    "budget_exceeded", "deployments_rate_limited", "rate_limit_exceeded", "tenant_queue_full",
    "too_many_concurrent_requests", "too_many_failed_authentications",
}  # fmt: skip
CLIENT_ERRORS = {
    "admin_read_only", "answer_too_large", "api_key_expired", "api_key_revoked", "caller_gone",
    "conflict",
    "empty_file", "endpoint_not_supported", "headers_too_large",
    "idempotency_key_in_use", "idempotency_key_reused",
    "invalid_admin_token", "invalid_api_key", "invalid_deployment", "invalid_file",
    "invalid_header", "invalid_json", "invalid_request", "invalid_value", "item_not_found",
    "method_not_allowed",
    "missing_admin_token", "missing_api_key", "missing_required_parameter", "model_not_allowed",
    "model_not_found", "not_found", "origin_not_allowed", "previous_response_not_found",
    "provider_rejected_request",
    "reader_too_slow", "request_timeout", "request_too_large", "secret_in_use", "secret_not_found",
    "storage_quota_exceeded", "unknown_parameter", "unsupported_content_encoding",
    "unsupported_parameter", "unsupported_value",
}  # fmt: skip
# error_type values that are no code: success, a client that left, a status without a code.
OTHERS = {"": "ok", "cancelled": "left", "500": "5xx", "529": "5xx", "429": "429", "422": "4xx"}


def _selected(record: str) -> re.Pattern[str]:
    (rule,) = [r for r in rules() if r.get("record") == record]
    (regex,) = re.findall(r'error_type=~"([^"]*)"', rule["expr"])
    return re.compile(regex)


def test_every_code_is_classified_once() -> None:
    assert not SERVER_ERRORS & REFUSALS
    assert not SERVER_ERRORS & CLIENT_ERRORS
    assert not REFUSALS & CLIENT_ERRORS
    assert SERVER_ERRORS | REFUSALS | CLIENT_ERRORS == OWN_CODES


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ("switchyard:llm_requests_5xx:ratio_rate5m", "5xx"),
        ("switchyard:llm_requests_429:ratio_rate5m", "429"),
    ],
)
def test_each_ratio_selects_its_codes_exactly(record: str, kind: str) -> None:
    selected = _selected(record)
    wanted = SERVER_ERRORS if kind == "5xx" else REFUSALS
    for code in OWN_CODES:
        assert bool(selected.fullmatch(code)) == (code in wanted), code
    for value, cls in OTHERS.items():
        assert bool(selected.fullmatch(value)) == (cls == kind), value


def test_the_status_panel_selects_the_llm_routes_only() -> None:
    (query,) = [q for q in dashboard_queries() if "switchyard_http_requests_total" in q]
    (regex,) = re.findall(r'route=~"([^"]*)"', query)
    routes = re.compile(regex)
    assert all(routes.fullmatch(path) for path in ROUTES)
    for other in ("/ui/signin", "/v1/files", "/v1/batches", "/admin/v1/keys", "/v1/models"):
        assert not routes.fullmatch(other), other
