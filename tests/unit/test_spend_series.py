"""Which deployments an alias's spend series are made for before their first spend."""

import pytest

from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable
from switchyard.workers.accounting.service import served_by

pytestmark = pytest.mark.unit


def _dep(model: str) -> Deployment:
    return Deployment(provider="p", model=model)


def test_an_alias_is_served_by_its_own_deployments_then_its_fallbacks_once_each() -> None:
    table = RouteTable(
        providers={"p": Provider(kind="openai-compatible", api_base="http://p.invalid/v1")},
        routes={
            "chat": Route(deployments=(_dep("a"), _dep("b")), fallbacks=("spare", "gone")),
            "spare": Route(deployments=(_dep("c"),), fallbacks=("chat", "last")),
            "last": Route(deployments=(_dep("d"),)),
        },
    )
    assert served_by(table, "chat") == ["p--a", "p--b", "p--c", "p--d"]
    assert served_by(table, "last") == ["p--d"]
    assert served_by(table, "unknown") == []
