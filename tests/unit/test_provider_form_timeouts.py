"""The admin UI's provider form and a provider's timeouts: saving it changes only the fields
changed. It rebuilt ``timeouts`` from three fields, so any save dropped ``idle_s`` (it had no
field) and wrote every default as if set."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.admin.ui.pages.providers import _document, _values
from switchyard.schemas.routing import Provider
from switchyard.schemas.timeouts import Timeouts

pytestmark = pytest.mark.unit


def _form(provider: Provider, **changed: Any) -> dict[str, Any]:
    """The form as the page showed it for ``provider``, as posted back (text), ``changed``."""
    shown = _values("p", provider)
    posted = {k: "" if v is None else str(v) for k, v in shown.items()}
    return posted | {f"timeouts-{k}": v for k, v in changed.items()}


def test_saving_keeps_a_providers_idle_s_and_leaves_unset_fields_unset() -> None:
    provider = Provider(kind="openai", timeouts=Timeouts(idle_s=30.0, stream_s=900.0))
    doc, errors = _document(_form(provider), provider.timeouts)
    assert errors == {}
    assert doc["timeouts"] == {"idle_s": 30.0, "stream_s": 900.0}


def test_a_changed_field_is_written_and_an_emptied_one_unset() -> None:
    provider = Provider(kind="openai", timeouts=Timeouts(idle_s=30.0, stream_s=900.0))
    doc, errors = _document(_form(provider, idle_s="45", stream_s="", request_s="100"), None)
    assert errors == {}
    assert doc["timeouts"] == {"idle_s": 45.0, "request_s": 100.0}
    doc, _ = _document(_form(provider, idle_s="45"), provider.timeouts)
    assert doc["timeouts"] == {"idle_s": 45.0, "stream_s": 900.0}


def test_a_form_without_the_idle_field_keeps_it() -> None:
    provider = Provider(kind="openai", timeouts=Timeouts(idle_s=30.0))
    posted = _form(provider)
    del posted["timeouts-idle_s"]
    doc, _ = _document(posted, provider.timeouts)
    assert doc["timeouts"] == {"idle_s": 30.0}


def test_a_bad_idle_value_is_named() -> None:
    _, errors = _document(_form(Provider(kind="openai"), idle_s="nan"), None)
    assert "timeouts-idle_s" in errors
    assert "idle" in errors["timeouts-idle_s"]
