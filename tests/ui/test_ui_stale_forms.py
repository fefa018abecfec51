"""The route editor in a browser when another admin changed the table under the open page."""

from __future__ import annotations

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_stale_delete_and_a_save_of_a_deleted_route_say_what_happened(
    web: Browser,
) -> None:
    price = {"input_per_token": 0.000001, "output_per_token": 0.000002}
    route = {"deployments": [{"provider": "fake", "model": "ui-stale", "price": price}]}
    assert (await web.stack.admin("PUT", "/routes/ui-stale", route)).status_code == 200
    try:
        await web.sign_in()
        page = web.page
        await web.goto("/ui/routes/edit?alias=ui-stale")
        assert "Has its own price" in await page.locator('[data-hidden-for="0"]').inner_text()
        theirs = {"deployments": [{"provider": "fake", "model": "ui-stale", "weight": 5}]}
        assert (await web.stack.admin("PUT", "/routes/ui-stale", theirs)).status_code == 200
        await page.get_by_role("button", name="Delete route").click()
        banner = page.locator('[data-error-for="form"]')
        assert "so it was not deleted" in await banner.inner_text()
        assert await page.get_by_label("Weight of deployment 1").input_value() == "5.0"
        await web.shot("route-delete-stale")

        assert (await web.stack.admin("DELETE", "/routes/ui-stale")).status_code == 200
        await page.get_by_label("Description").fill("mine")
        await page.get_by_role("button", name="Save route").click()
        banner = page.locator('[data-error-for="form"]')
        assert "was deleted by someone else" in await banner.inner_text()
        assert await page.get_by_label("Model alias").input_value() == "ui-stale"
        await web.shot("route-save-deleted")
        await banner.get_by_role("link", name="Go to the list").click()
        await page.wait_for_url("**/ui/routes")
    finally:
        await web.stack.admin("DELETE", "/routes/ui-stale")
