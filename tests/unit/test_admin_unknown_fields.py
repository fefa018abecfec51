"""An admin API body with a field its type does not have is a 400 whose ``param`` is that
field, with its path: at the top it was null ("invalid key: Object contains unknown field
`id`", nothing for a script or an SDK to key on, the reply of every key record sent back
as a PATCH), and below it named the object holding the field, not the field."""

from __future__ import annotations

import pytest

from switchyard.admin.bodies import KeyFields, decode
from switchyard.errors import InvalidRequest
from switchyard.schemas.routing import Provider, Route

pytestmark = pytest.mark.unit


def _refused(body: bytes, kind: type, what: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode(body, kind, what)
    return caught.value


def test_an_unknown_top_level_field_is_the_param_with_the_fields_there_are() -> None:
    refused = _refused(b'{"name": "ci", "id": "key_0123456789abcdef"}', KeyFields, "key")
    assert refused.param == "id"
    assert refused.message.startswith("invalid key: unknown field `id` (it takes name, owner")
    assert "max_priority" in refused.message


@pytest.mark.parametrize(
    ("body", "kind", "param"),
    [
        (
            b'{"deployments": [{"provider": "p", "model": "m", "wieght": 2}]}',
            Route,
            "deployments[0].wieght",
        ),
        (
            b'{"deployments": [{"provider": "p", "model": "m", "timeouts": {"x": 1}}]}',
            Route,
            "deployments[0].timeouts.x",
        ),
        (b'{"kind": "openai", "api_key": "sk-x"}', Provider, "api_key"),
    ],
)
def test_an_unknown_field_below_is_named_with_its_path(body: bytes, kind: type, param: str) -> None:
    refused = _refused(body, kind, "thing")
    assert refused.param == param
    assert f"unknown field `{param}`" in refused.message
