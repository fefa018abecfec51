"""Names in admin API paths are checked whole: a trailing newline is no name."""

import pytest

from switchyard.admin.path_names import secret_name, table_name
from switchyard.errors import InvalidRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["openai\n", "a\nb", "\n"])
def test_a_name_with_a_newline_is_refused_where_dollar_took_a_trailing_one(name: str) -> None:
    """``$`` matches before a final newline: `PUT /admin/v1/providers/openai%0A` stored a
    provider named "openai\\n" (a review)."""
    with pytest.raises(InvalidRequest):
        table_name(name, "provider name", "name")
    with pytest.raises(InvalidRequest):
        secret_name(name)


def test_right_names_pass() -> None:
    assert table_name("gpt-4o.mini:v1/eu", "route alias", "alias") == "gpt-4o.mini:v1/eu"
    assert secret_name("openai-key_2") == "openai-key_2"
