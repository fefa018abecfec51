"""The tail's 404 for a path only the gateway serves says where it is served."""

from __future__ import annotations

import pytest

from switchyard.config import load_settings
from switchyard.ingress.app import unknown_path

pytestmark = pytest.mark.unit


def test_a_gateway_path_on_the_tail_names_the_gateway() -> None:
    settings = load_settings(env={})
    said = unknown_path("/admin/v1/keys", "tail", settings)
    assert said == (
        "Unknown path /admin/v1/keys: the admin API is served by the gateway (port 8081), "
        "not by this edge (the tail)"
    )
    assert "127.0.0.1" not in said  # where the gateway listens is not a client's to learn
    assert "the admin web app is served by the gateway" in unknown_path("/ui/", "tail", settings)
    assert unknown_path("/admin/v1/keys", "gateway", settings) == "Unknown path /admin/v1/keys"
    assert unknown_path("/administer", "tail", settings) == "Unknown path /administer"


def test_a_gateway_on_every_address_is_named_by_its_port() -> None:
    env = {"SWITCHYARD_INGRESS__GATEWAY": '{"host": "0.0.0.0", "port": 9001}'}
    said = unknown_path("/admin/v1/keys", "tail", load_settings(env=env))
    assert "served by the gateway (port 9001), not by this edge" in said
