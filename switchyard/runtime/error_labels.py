"""The ``error_type`` label of a failed request: one of Switchyard's own error codes.

A client's error carries the code Switchyard gave it, or, for a provider's 4xx passed on, the
provider's own (``context_length_exceeded``, or anything: one server sends a new id with every
error). As a metric label a passed-on code makes a series per value and, past the label's bound,
hides the real classes as ``_OTHER``; so the label is the code only when it is one of ours, else
the error class's own code. ``tests/unit/test_error_labels.py`` checks every code the source
sets is in :data:`OWN_CODES`.
"""

from __future__ import annotations

from switchyard.errors import ApiError

OWN_CODES = frozenset(
    {
        "admin_disabled",
        "admin_read_only",
        "all_deployments_failed",
        "answer_too_large",
        "api_key_expired",
        "api_key_revoked",
        "budget_exceeded",
        "caller_gone",
        "conflict",
        "deadline_exceeded",
        "deadline_too_short",
        "deployment_removed",
        "deployments_cooling_down",
        "deployments_rate_limited",
        "edge_stopping",
        "empty_file",
        "endpoint_not_supported",
        "file_storage_full",
        "head_stopping",
        "headers_too_large",
        "idempotency_key_in_use",
        "idempotency_key_reused",
        "invalid_admin_token",
        "invalid_api_key",
        "invalid_deployment",
        "invalid_file",
        "invalid_header",
        "invalid_json",
        "invalid_request",
        "invalid_upstream_reply",
        "invalid_value",
        "item_not_found",
        "items_unavailable",
        "keys_unavailable",
        "limits_unavailable",
        "method_not_allowed",
        "missing_admin_token",
        "missing_api_key",
        "missing_required_parameter",
        "model_not_allowed",
        "model_not_found",
        "no_answer",
        "no_deployment",
        "no_workers",
        "not_found",
        "origin_not_allowed",
        "previous_response_not_found",
        "provider_auth_error",
        "provider_disconnected",
        "provider_error",
        "provider_model_not_found",
        "provider_overloaded",
        "provider_redirect",
        "provider_rejected_request",
        "provider_timeout",
        "provider_unreachable",
        "queue_full",
        "queue_unavailable",
        "rate_limit_exceeded",
        "reader_too_slow",
        "replay_unavailable",
        "request_too_large",
        "request_timeout",
        "response_owners_unavailable",
        "secret_in_use",
        "secret_not_found",
        "secret_unavailable",
        "secrets_error",
        "service_unavailable",
        "spend_unavailable",
        "starting",
        "stopping",
        "storage_quota_exceeded",
        "stream_interrupted",
        "tenant_queue_full",
        "tokenizer_unavailable",
        "too_many_concurrent_requests",
        "too_many_failed_authentications",
        "unsupported_content_encoding",
        "unknown_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "upgrade_unfinished",
        "upstream_not_allowed",
        "vault_unavailable",
        "worker_stopped",
    }
)


def error_class(error: ApiError, status: int = 0) -> str:
    """A bounded ``error_type`` for ``error``."""
    if error.code in OWN_CODES:
        return error.code
    own = type(error).code  # the class's code; a passed-on one replaced it on the instance
    return own if own else (str(status) if status else type(error).__name__)
