"""What the management API and web app use: the clients of the admin services and stores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from switchyard.admin.audit import AuditLog
from switchyard.admin.file_table import FileTable
from switchyard.admin.key_idempotency import IdempotentCreates
from switchyard.admin.key_index import KeyIndex
from switchyard.admin.key_presence import KeyPresence
from switchyard.admin.keys import KeyAdmin
from switchyard.admin.read_slots import ReadSlots
from switchyard.admin.spend import SpendReader
from switchyard.admin.token import AdminAuth
from switchyard.admin.token_audit import RefusalAudit
from switchyard.bus.audit import AuditWriter
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.client import LLMClient
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.client_address import TrustedProxies
from switchyard.schemas.routing import RouteTable

if TYPE_CHECKING:  # (the web app's package imports this module)
    from switchyard.admin.ui.sessions import SessionStore


class ImportedSecret(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def env_var(self) -> str | None: ...
    @property
    def value(self) -> str | None: ...


class Imported(Protocol):
    """What a LiteLLM config converts to (``switchyard.control.litellm_import.ImportResult``)."""

    @property
    def table(self) -> RouteTable: ...
    @property
    def secrets(self) -> Sequence[ImportedSecret]: ...
    @property
    def unmapped(self) -> Sequence[str]: ...


# Parses a LiteLLM proxy config (a dict from its YAML); the gateway assembly passes the control
# component's converter in, since components never import each other.
LiteLLMConverter = Callable[[str], Imported]
"""Converts a LiteLLM config's YAML text; raises ``ValueError`` (saying why) for text it will
not read (not YAML, no model list, aliases expanding past a bound)."""


@dataclass
class AdminContext:
    """What the management API needs, built when the gateway starts."""

    auth: AdminAuth
    control: ControlClient
    secrets: SecretsAdmin
    llm: LLMClient
    keys: KeyAdmin
    spend: SpendReader
    index: KeyIndex
    audit: AuditWriter
    audit_log: AuditLog
    key_presence: KeyPresence  # which deployments have no provider key stored
    files: FileTable  # what the settings file defines (seeds the live table), read when changed
    convert_litellm: LiteLLMConverter | None = None
    batches: BatchRecords | None = None  # the Batch API's jobs, followed live
    # Writes a batch's record (an admin's cancel), on the edge's connection, not the admin one.
    batch_store: BatchStore | None = None
    # Whose X-Forwarded-For (or Forwarded: ingress.forwarded_header) names the client: the
    # sign-in guard and every audit entry's source.
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    refusals: RefusalAudit | None = None  # wrong tokens on /admin/v1, into the audit log
    reads: ReadSlots = field(default_factory=ReadSlots)  # exports and streams open at once
    # The web app's sign-in sessions, shared by every replica (session_list.py), and the
    # replica's name, which the sessions' list and sign-out answer with.
    sessions: SessionStore | None = None
    instance: str = ""
    # What each Idempotency-Key of POST /keys answered, shared by every replica (NATS KV).
    idempotency: IdempotentCreates | None = None

    @property
    def file_table(self) -> RouteTable:
        """The routes and providers the settings file defines now."""
        return self.files.current()
