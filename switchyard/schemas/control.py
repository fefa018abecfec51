"""Messages of the control API (``control.v1.admin.*``)."""

from __future__ import annotations

import msgspec

from switchyard.schemas.routing import RouteTable


class TableState(msgspec.Struct, frozen=True, kw_only=True):
    """The route table and the KV revision it was read at (for compare-and-set)."""

    revision: int
    table: RouteTable


class PutTable(msgspec.Struct, frozen=True, kw_only=True):
    table: RouteTable
    # Apply only if the stored table is still at this revision (None: unconditionally).
    expected_revision: int | None = None


class CooldownInfo(msgspec.Struct, frozen=True, kw_only=True):
    until: float
    seconds_left: float
    status: int
    reason: str


class DeploymentInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    kind: str
    model: str
    aliases: list[str]
    weight: float
    concurrency: int
    queued: int = -1  # requests waiting in the deployment's queue (-1: unknown)
    in_flight: int = -1  # requests being served (unacknowledged)
    cooldown: CooldownInfo | None = None


class DeploymentList(msgspec.Struct, frozen=True):
    deployments: list[DeploymentInfo]


class DeploymentRef(msgspec.Struct, frozen=True, kw_only=True):
    deployment: str


ENCODER = msgspec.json.Encoder()
TABLE_STATE = msgspec.json.Decoder(TableState)
PUT_TABLE = msgspec.json.Decoder(PutTable)
DEPLOYMENTS = msgspec.json.Decoder(DeploymentList)
DEPLOYMENT_REF = msgspec.json.Decoder(DeploymentRef)
