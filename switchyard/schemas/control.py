"""Messages of the control API (``control.v1.admin.*``)."""

from __future__ import annotations

import msgspec

from switchyard.schemas.monitor import DeploymentState
from switchyard.schemas.routing import RouteTable


class TableState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The route table and the KV revision it was read at (for compare-and-set).

    ``changed`` answers a write only (a read leaves it out): False when the table written
    was the live one as it is, so nothing was written and ``revision`` is the live one's."""

    revision: int
    table: RouteTable
    changed: bool | None = None


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
