"""A call's timeouts, field by field: the deployment's, else its provider's, else the default
(pure logic)."""

from __future__ import annotations

import msgspec
import pytest

from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable, route_table_problems
from switchyard.schemas.timeouts import DEFAULT_TIMEOUTS, CallTimeouts, Timeouts, call_timeouts
from switchyard.workers.modelproxy.job import Target

pytestmark = pytest.mark.unit

TIGHT = Timeouts(first_token_s=3, request_s=3, stream_s=6)


def test_a_deployment_field_overrides_only_that_field_of_its_provider() -> None:
    provider = Provider(kind="openai", timeouts=TIGHT)
    deployment = Deployment(provider="pa", model="m", timeouts=Timeouts(first_token_s=50))
    target = Target("pa", provider, deployment)
    assert target.timeouts == CallTimeouts(first_token_s=50, stream_s=6, request_s=3, idle_s=120)


def test_fields_nobody_sets_are_the_defaults() -> None:
    assert call_timeouts(None, Timeouts()) == DEFAULT_TIMEOUTS
    assert call_timeouts(Timeouts(stream_s=9), Timeouts(request_s=7)) == CallTimeouts(
        first_token_s=DEFAULT_TIMEOUTS.first_token_s, stream_s=9, request_s=7, idle_s=120
    )
    assert call_timeouts(None, TIGHT) == CallTimeouts(
        first_token_s=3, stream_s=6, request_s=3, idle_s=120
    )


def test_only_the_fields_written_are_stored() -> None:
    doc = msgspec.json.encode(Deployment(provider="p", model="m", timeouts=Timeouts(stream_s=5)))
    assert b'"timeouts":{"stream_s":5' in doc
    # A table stored before: every field written, each read back as set.
    old = msgspec.json.decode(
        b'{"first_token_s":60.0,"stream_s":600.0,"request_s":600.0}', type=Timeouts
    )
    assert call_timeouts(old, TIGHT) == DEFAULT_TIMEOUTS


def test_routes_sharing_a_deployment_agree_when_its_timeouts_come_out_the_same() -> None:
    """One deployment in two routes, one writing the provider's own value, the other nothing:
    the same timeouts, so no clash; another value is one."""

    def table(second: Timeouts | None) -> RouteTable:
        first = Deployment(provider="pa", model="m", timeouts=Timeouts(request_s=3))
        return RouteTable(
            providers={"pa": Provider(kind="openai", timeouts=TIGHT)},
            routes={
                "one": Route(deployments=(first,)),
                "two": Route(deployments=(Deployment(provider="pa", model="m", timeouts=second),)),
            },
        )

    assert route_table_problems(table(None)) == []
    assert route_table_problems(table(Timeouts(first_token_s=3))) == []
    assert route_table_problems(table(Timeouts(request_s=4)))


def test_a_clash_a_providers_change_makes_names_the_field_and_where_each_value_comes_from() -> None:
    """The provider's ``request_s`` 3, route `one` writing 3 on the deployment, route `two`
    nothing: accepted. The provider's set to 5: refused "with different concurrency or
    timeouts", naming neither the field nor the provider, so the operator could not tell that
    route `one`'s written 3 is what now differs."""
    deployments = (
        Deployment(provider="pa", model="m", timeouts=Timeouts(request_s=3)),
        Deployment(provider="pa", model="m"),
    )

    def table(request_s: float) -> RouteTable:
        provider = Provider(kind="openai", timeouts=Timeouts(request_s=request_s))
        routes = {
            "one": Route(deployments=deployments[:1]),
            "two": Route(deployments=deployments[1:]),
        }
        return RouteTable(providers={"pa": provider}, routes=routes)

    assert route_table_problems(table(3)) == []
    (problem,) = route_table_problems(table(5))
    assert problem.field == "routes.two.deployments[0]"
    assert "routes.one.deployments[0]" in problem.problem
    assert (
        "`timeouts.request_s` is 5 s here (provider `pa`'s timeouts) and 3 s there "
        "(written on the deployment)"
    ) in problem.problem
    assert "first_token_s" not in problem.problem  # only what differs


def test_a_concurrency_clash_says_both_values() -> None:
    uses = (
        Deployment(provider="pa", model="m", concurrency=4),
        Deployment(provider="pa", model="m"),
    )
    routes = {"one": Route(deployments=uses[:1]), "two": Route(deployments=uses[1:])}
    (problem,) = route_table_problems(
        RouteTable(providers={"pa": Provider(kind="openai")}, routes=routes)
    )
    assert "`concurrency` is not written here and 4 there" in problem.problem
