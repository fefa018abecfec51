"""Who asked, from the header nats-server writes on a request that crossed an import."""

from __future__ import annotations

import json

from switchyard.bus import headers as h
from switchyard.bus.request_info import caller_identity


def _info(acc: str, cn: str) -> dict[str, str]:
    user = f"CN={cn},OU=client,O=Switchyard"
    return {h.REQUEST_INFO: json.dumps({"acc": acc, "user": user, "rtt": 1})}


def test_a_client_zone_user_is_named_by_its_certificate() -> None:
    assert caller_identity(_info("CLIENT", "tail")) == "tail"


def test_a_user_of_another_account_is_nobody_the_services_trust() -> None:
    """An internal client's certificate says OU=client (issued when it lived in CLIENT); even
    one named like an edge must present its key, not be taken for the edge."""
    assert caller_identity(_info("INTERNAL", "tail")) == ""


def test_no_header_or_a_broken_one_is_nobody() -> None:
    assert caller_identity(None) == ""
    assert caller_identity({}) == ""
    assert caller_identity({h.REQUEST_INFO: "{not json"}) == ""
    assert caller_identity({h.REQUEST_INFO: json.dumps({"acc": "CLIENT"})}) == ""
