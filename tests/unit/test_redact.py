"""Upstream messages lose the provider key, and pieces of it a provider echoes."""

from __future__ import annotations

import pytest

from switchyard.schemas.secret import Secret, redact

pytestmark = pytest.mark.unit

KEY = Secret("sk-proj-Q7rT2mXv9LpA4nZc8WbE1yKd")


def test_the_whole_key_is_masked() -> None:
    assert redact(f"bad key {KEY.reveal()}!", KEY) == "bad key ***!"


def test_an_echoed_piece_of_the_key_is_masked_with_its_run() -> None:
    # OpenAI's way: the start and the end of the key, stars between.
    text = "Incorrect API key provided: sk-proj-Q7rT****************1yKd. See the docs."
    assert redact(text, KEY) == "Incorrect API key provided: *******************1yKd. See the docs."
    assert redact("key ends mXv9LpA4nZc8 (12 chars)", KEY) == "key ends *** (12 chars)"


def test_ordinary_words_and_short_overlaps_stay() -> None:
    text = "Rate limit reached for organization org-abc in project proj_default; sk-proj 2mXv"
    assert redact(text, KEY) == text
    assert redact("anything", None) == "anything"
    assert redact("anything", Secret("")) == "anything"


def test_long_credential_documents_are_masked_whole_only() -> None:
    document = Secret('{"type": "service_account", "private_key": "' + "A" * 600 + '"}')
    text = "service_account not allowed in project_id x"
    assert redact(text, document) == text
    assert redact(f"leak {document.reveal()}", document) == "leak ***"
