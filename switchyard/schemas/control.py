"""Messages of the control API (``control.v1.admin.*``)."""

from __future__ import annotations

import msgspec

from switchyard.schemas.monitor import DeploymentState
from switchyard.schemas.routing import RouteTable


class TableState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The route table and the KV revision it was read at (for compare-and-set).

    ``changed`` answers a write only (a read leaves it out): False when the table written
    was the live one as it is, so nothing was written and ``revision`` is the live one's.

    ``change_words`` answers a write that wrote (from a control service of this version on):
    what it changed about providers against the table it actually replaced, in the audit
    log's words (``switchyard.runtime.provider_changes.table_words``). A reader that does not
    know it ignores it (no new wire level); ``ControlClient`` hands it out apart, never in the
    state it returns, so no HTTP answer carries it."""

    revision: int
    table: RouteTable
    changed: bool | None = None
    change_words: str | None = None


class PutTable(msgspec.Struct, frozen=True, kw_only=True):
    table: RouteTable
    # Apply only if the stored table is still at this revision (None: unconditionally).
    expected_revision: int | None = None


class DeploymentList(msgspec.Struct, frozen=True):
    deployments: list[DeploymentState]


class HistoryRequest(msgspec.Struct, frozen=True, kw_only=True):
    seconds: int = 900


class DeploymentRef(msgspec.Struct, frozen=True, kw_only=True):
    deployment: str


ENCODER = msgspec.json.Encoder()
TABLE_STATE = msgspec.json.Decoder(TableState)
PUT_TABLE = msgspec.json.Decoder(PutTable)
DEPLOYMENTS = msgspec.json.Decoder(DeploymentList)
DEPLOYMENT_REF = msgspec.json.Decoder(DeploymentRef)
HISTORY_REQUEST = msgspec.json.Decoder(HistoryRequest)
