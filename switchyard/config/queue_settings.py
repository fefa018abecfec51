"""The settings of what is stored in JetStream: the request and usage streams, and the Batch
API's files and runner (sections of :class:`switchyard.config.settings.Settings`)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from switchyard.config.section import Seconds, Section
from switchyard.errors import ConfigError


class StreamSettings(Section, frozen=True):
    """JetStream streams, provisioned by the provisioner identity.

    Attributes:
        dispatch_queue_limit: requests held per deployment (queued plus in flight); beyond it a
            new request is refused at once with 503 ``queue_full`` (discard-new per subject).
        dispatch_max_age_s: a queued request older than this is dropped by the server.
        duplicate_window_s: JetStream deduplicates re-published requests and usage events
            within this window (``Nats-Msg-Id``).
        usage_max_age_s: how long usage events are kept in the stream.
        usage_max_bytes: the most the USAGE stream keeps; past it the oldest events go first,
            applied or not: ~600 bytes a request, so 2 GiB holds ~75 minutes of unapplied
            usage at 1,000 req/s (about a day at 40); what goes unapplied is logged and counted
            (``switchyard_usage_batches_lost_total``, alert SwitchyardUsageLost).
            Without a bound a busy gateway's week of events (~600 bytes each) outgrew the
            JetStream store, and then every stream, the request queues included, stopped.
        hold_tenant_limit: requests one tenant may have waiting per deployment and priority
            while the deployment is saturated (HOLD, discard-new per subject); beyond it that
            tenant's new requests get 429 ``tenant_queue_full`` and nobody else's do.
        hold_max_bytes: the most the HOLD stream stores (all tenants together).
        hold_total_limit: requests one deployment may hold, every tenant and priority
            together; from there its new ``default`` and ``batch`` requests get 503
            ``queue_full`` (interactive ones a tenth later) until the count is a tenth below.
            Counted by the feeder, so it lags a burst by milliseconds; not a byte bound.
        response_items_max_age_s: how long the output items of translated Responses answers
            (``store`` not false) are kept for later ``item_reference``s (OpenAI keeps 30 days).
        response_items_max_bytes: the most the ``sy_response_items`` bucket keeps, all tenants
            together; past it the oldest items go first.
    """

    dispatch_queue_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    hold_tenant_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    hold_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 1024 * 1024 * 1024
    hold_total_limit: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    dispatch_max_age_s: Seconds = 3600.0
    duplicate_window_s: Seconds = 120.0
    usage_max_age_s: Seconds = 7 * 86400.0
    usage_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 2 * 1024 * 1024 * 1024
    response_items_max_age_s: Seconds = 30 * 86400.0
    response_items_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 1024 * 1024 * 1024


class BatchSettings(Section, frozen=True):
    """The OpenAI Batch API (``/v1/files``, ``/v1/batches``) and its runner.

    Attributes:
        max_file_bytes: largest JSONL file an edge accepts.
        max_in_flight: lines one runner has submitted and not yet answered, over all batches
            (they run at ``batch`` priority, on capacity nothing else wants).
        line_timeout_s: an unanswered line is submitted again after this long (kept below
            ``nats.response_threshold_s``: a reply path idle longer is dropped by the server).
        progress_s: how often a running batch's ``request_counts`` are written.
        retry_base_s: the first wait before a line that failed for a passing reason (a
            provider's 5xx or 429, no provider reachable) is sent again; each later wait is
            longer (see ``switchyard.workers.batch.retries``).
        file_expiry_s: how long an upload, or a batch's output and error file, lives when
            its creator set no ``expires_after`` / ``output_expires_after`` (OpenAI's
            default for batch files: 30 days); 0 keeps them until deleted.
        finished_batch_ttl_s: how long a batch's record stays after it ended (completed,
            failed, expired, cancelled); 0 keeps records for ever.
        sweep_s: how often the runner deletes expired files and batch records.
        dead_chunks_after_s: the sweep also purges a file's chunks that no file names (what a
            writer killed half-way left) once nothing was added to them for this long; keep
            it well above the longest upload or batch output write.
        files_max_bytes: the most the files store (``sy_files``: every tenant's uploads and
            batch outputs together) holds; past it uploads are refused (503
            ``file_storage_full``) and a batch output waits for room. Keep it well inside the
            node's JetStream store (``max_file_store``, 8 GB in the local stack), which the
            request queues and USAGE share: a full JetStream store stops every stream.
            ``switchyard provision`` applies a change to an existing store.
        tenant_max_bytes: the most one tenant (a key's team, else the key) keeps in files it
            has not deleted and that have not expired (uploads, batch outputs, message batches'
            inputs and results); an upload past it is refused (400
            ``storage_quota_exceeded``). Outputs count but are never refused.
        tenant_max_files: how many such files one tenant keeps at most.
    """

    max_file_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 100 * 1024 * 1024
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 64
    line_timeout_s: Seconds = 240.0
    progress_s: Seconds = 1.0
    retry_base_s: Seconds = 2.0
    file_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 30 * 86400
    finished_batch_ttl_s: Annotated[int, msgspec.Meta(ge=0)] = 30 * 86400
    sweep_s: Seconds = 600.0
    dead_chunks_after_s: Seconds = 3600.0
    files_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 2 * 1024 * 1024 * 1024
    tenant_max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024 * 1024
    tenant_max_files: Annotated[int, msgspec.Meta(ge=1)] = 10_000

    def __post_init__(self) -> None:
        """Refuse a files store too small for one file of the largest size accepted.

        Raises:
            ConfigError: ``files_max_bytes`` is below ``max_file_bytes``.
        """
        if self.files_max_bytes < self.max_file_bytes:
            raise ConfigError(
                "batch.files_max_bytes",
                f"{self.files_max_bytes} is less than batch.max_file_bytes "
                f"({self.max_file_bytes}): no upload of the largest size could be stored",
                "raise batch.files_max_bytes (or lower batch.max_file_bytes)",
            )
