"""Web forms opened before someone else changed the same thing, on the session stack.

Several admins work at once (two tabs, the CLI, the API): a form saved after the record
changed under it must not put the old values back unnoticed, and a page left open must not
act on what it showed when that is no longer true. Driven as a browser posts its forms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


class _Inputs(HTMLParser):
    """The values a browser would post from the page's form with ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.values: dict[str, str] = {}
        self._inside = False
        self._select = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._inside = a.get("action") == self.action and a.get("method") == "post"
        elif not self._inside:
            return
        elif tag == "input" and a.get("name"):
            self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a.get("name", "")
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = ""  # the option's text follows
            self._option = True

    def handle_data(self, data: str) -> None:
        if getattr(self, "_option", False):
            self.values[self._select] += data
            self._option = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "select":
            self._select = ""


def form_of(html: str, action: str) -> dict[str, str]:
    parser = _Inputs(action)
    parser.feed(html)
    return parser.values


async def _new_key(stack: Stack, name: str, **fields: Any) -> Any:
    """A key written straight to the bucket, once the gateway's index lists it (a moment
    later: its page before then is a 404)."""
    _, record = await stack.new_key(name, **fields)
    while not (await stack.admin("GET", f"/keys?q={record.id}")).json()["total"]:
        await asyncio.sleep(0.05)
    return record


async def _key(stack: Stack, key_id: str) -> dict[str, Any]:
    found = await stack.admin("GET", f"/keys/{key_id}")
    assert found.status_code == 200, found.text
    doc: dict[str, Any] = found.json()
    return doc


async def test_a_key_form_saved_after_another_change_is_refused_not_reverting_it(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """The form sent every field: a budget set by the API meanwhile went back to 0 (no
    budget) when another tab saved, and the audit said every field had changed."""
    web, _ = signed_in
    record = await _new_key(stack, "stale-key-form", budget_usd=5.0)
    path = f"/ui/keys/{record.id}"
    form = form_of((await web.get(path)).text, path)
    assert form["budget_usd"] == "5.0"
    changed = await stack.admin("PATCH", f"/keys/{record.id}", {"budget_usd": 50, "tpm": 1000})
    assert changed.status_code == 200, changed.text

    stale = await web.post(path, data={**form, "owner": "second tab"})
    assert stale.status_code == 409, stale.text
    assert "was changed by someone else since you opened this form" in stale.text
    assert f'href="{path}">Reload</a>' in stale.text
    assert 'value="second tab"' in stale.text  # the input is kept
    kept = await _key(stack, record.id)
    assert (kept["budget_usd"], kept["tpm"], kept["owner"]) == (50, 1000, "")

    # Reloaded, the same change goes through, and only it is written and audited.
    form = form_of((await web.get(path)).text, path)
    saved = await web.post(path, data={**form, "owner": "second tab"})
    assert saved.status_code == 303, saved.text
    kept = await _key(stack, record.id)
    assert (kept["budget_usd"], kept["tpm"], kept["owner"]) == (50, 1000, "second tab")
    audit = (await stack.admin("GET", f"/audit?q={record.id}&limit=5")).json()["entries"]
    update = next(e for e in audit if e["action"] == "key.update" and e["via"] == "ui")
    assert update["detail"] == "owner '' -> 'second tab'", update

    # Saved unchanged: nothing is written, nothing audited.
    form = form_of((await web.get(path)).text, path)
    same = await web.post(path, data=form, follow_redirects=True)
    assert "Nothing to save" in same.text
    audit = (await stack.admin("GET", f"/audit?q={record.id}&limit=5")).json()["entries"]
    assert [e["action"] for e in audit if e["via"] == "ui"].count("key.update") == 1, audit


async def test_a_key_keeps_its_expiry_time_and_takes_one_to_the_minute(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """The expiry was a date: saving any other field moved a key expiring at 21:27 to 00:00
    of that day, and one expiring later today could not be saved at all (an error at the
    top of the form, in the API's words, "seconds since 1970")."""
    web, _ = signed_in
    expires = time.time() + 2 * 3600 + 33.5
    record = await _new_key(stack, "expiry-kept", expires_at=expires)
    path = f"/ui/keys/{record.id}"
    page = (await web.get(path)).text
    form = form_of(page, path)
    saved = await web.post(path, data={**form, "owner": "kept expiry"})
    assert saved.status_code == 303, saved.text
    kept = await _key(stack, record.id)
    assert (kept["owner"], kept["expires_at"]) == ("kept expiry", expires)

    # A time typed is kept to the minute, in UTC.
    later = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(days=3)
    form = form_of((await web.get(path)).text, path)
    saved = await web.post(path, data={**form, "expires": later.strftime("%Y-%m-%dT%H:%M")})
    assert saved.status_code == 303, saved.text
    assert (await _key(stack, record.id))["expires_at"] == later.timestamp()

    # A time passed is refused at the field, in the form's words.
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    form = form_of((await web.get(path)).text, path)
    refused = await web.post(path, data={**form, "expires": past})
    assert refused.status_code == 400
    assert 'data-error-for="expires">That time has passed (times are UTC)' in refused.text
    assert "seconds since 1970" not in refused.text
    assert (await _key(stack, record.id))["expires_at"] == later.timestamp()
    # The form says the field takes a time, in UTC, and shows the key's own.
    page = (await web.get(path)).text
    assert 'type="datetime-local"' in page
    assert "Expires at (UTC)" in page
    assert form_of(page, path)["expires"] == later.strftime("%Y-%m-%dT%H:%M")


async def test_a_new_key_form_sent_again_creates_no_second_key(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Reloading the "Key created" page (the browser posts the form again), or Back and send,
    made a second active key of the same name; the first one's secret was lost."""
    web, _ = signed_in
    form = form_of((await web.get("/ui/keys/new")).text, "/ui/keys")
    refused = await web.post("/ui/keys", data={**form, "name": ""})  # fixed, then sent
    assert refused.status_code == 400
    form = {**form_of(refused.text, "/ui/keys"), "name": "sent-twice"}
    created = await web.post("/ui/keys", data=form)
    assert created.status_code == 200, created.text
    assert "Copy the key now" in created.text
    again = await web.post("/ui/keys", data=form)
    assert again.status_code == 409, again.text
    assert "No second key was created" in again.text
    assert "sk-" not in again.text.split("<main", 1)[1]  # no secret shown again
    keys = (await stack.admin("GET", "/keys?q=sent-twice")).json()
    assert keys["total"] == 1, keys
    assert f'/ui/keys/{keys["keys"][0]["id"]}"' in again.text


async def test_a_stale_secret_delete_confirmation_is_shown_again_not_acted_on(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """The confirmation named no user; a provider and a route started using the secret
    meanwhile, and the typed name deleted it anyway: the route answered 503."""
    web, _ = signed_in
    stored = await stack.admin("PUT", "/secrets/stale-confirm", {"value": "sk-stale-confirm-1"})
    assert stored.status_code == 200, stored.text
    path = "/ui/secrets/stale-confirm/delete"
    page = (await web.get(path)).text
    assert "deleting it breaks no route" in page
    form = {**form_of(page, path), "confirm": "stale-confirm"}
    base = (await stack.admin("GET", "/providers")).json()["fake"]["api_base"]
    provider = {"kind": "openai-compatible", "api_base": base, "secret": "stale-confirm"}
    assert (await stack.admin("PUT", "/providers/stale-user", provider)).status_code == 200
    route = {"deployments": [{"provider": "stale-user", "model": "echo"}]}
    assert (await stack.admin("PUT", "/routes/stale-route", route)).status_code == 200
    try:
        stale = await web.post(path, data=form)
        assert stale.status_code == 409, stale.text
        assert "changed since this page was shown" in stale.text
        assert "<strong>stale-user</strong>" in stale.text
        assert "<strong>stale-route</strong> will fail" in stale.text
        assert (await stack.admin("GET", "/secrets")).text.count('"stale-confirm"') == 1
        # Confirmed on the page as it is now, it is deleted.
        again = await web.post(path, data={**form_of(stale.text, path), "confirm": "stale-confirm"})
        assert again.status_code == 303, again.text
        assert '"stale-confirm"' not in (await stack.admin("GET", "/secrets")).text
    finally:
        await stack.admin("DELETE", "/routes/stale-route")
        await stack.admin("DELETE", "/providers/stale-user")


async def test_storing_a_secret_under_a_name_in_use_is_refused(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """ "Store a key" with an existing name wrote a new version of it, a secret in use too:
    two admins storing the same name overwrote each other. Rotate is the way to a new one."""
    web, csrf = signed_in
    stored = await stack.admin("PUT", "/secrets/store-taken", {"value": "sk-store-taken-1"})
    assert stored.status_code == 200, stored.text
    form = {"csrf": csrf, "name": "store-taken", "value": "sk-store-taken-2"}
    refused = await web.post("/ui/secrets", data=form)
    assert refused.status_code == 409, refused.text
    assert 'data-error-for="name">A secret named store-taken exists already' in refused.text
    assert "sk-store-taken" not in refused.text
    listed = (await stack.admin("GET", "/secrets")).json()["secrets"]
    assert next(s for s in listed if s["name"] == "store-taken")["version"] == 1
    rotated = await web.post("/ui/secrets/store-taken/rotate", data=form)
    assert rotated.status_code == 303, rotated.text
    listed = (await stack.admin("GET", "/secrets")).json()["secrets"]
    assert next(s for s in listed if s["name"] == "store-taken")["version"] == 2
    # The key it holds already: not rotated, and no cooldown ended; the page says how to.
    again = await web.post("/ui/secrets/store-taken/rotate", data=form)
    assert again.status_code == 303, again.text
    shown = (await web.get(again.headers["location"])).text
    assert "store-taken holds that key already: version 2 kept, not rotated" in shown
    assert "End cooldown on the admin UI&#39;s Queues page" in shown
    await stack.admin("DELETE", "/secrets/store-taken")


async def _sign_in(web: httpx.AsyncClient, stack: Stack) -> str:
    """Signs ``web`` in; the CSRF token of its new session."""
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    signin = await web.post("/ui/signin", data={"name": "ended-session", "token": token})
    assert signin.status_code == 303, signin.text
    return form_of((await web.get("/ui/keys/new")).text, "/ui/keys")["csrf"]


async def test_a_form_sent_after_the_session_ended_gets_a_page_not_raw_json(
    stack: Stack,
) -> None:
    """Signed out in another tab (or timed out, or the gateway restarted), every button
    showed `{"error":"sign in first"}`; an old tab after a new sign-in showed
    `{"error":"missing or wrong CSRF token"}`."""
    origin = {"Origin": stack.gateway_url}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=origin) as web:
        old = await _sign_in(web, stack)
        cookie = web.cookies["sy_session"]
        assert (await web.post("/ui/signout", data={"csrf": old})).status_code == 303
        web.cookies.set("sy_session", cookie, path="/ui")  # the other tab's cookie
        came_from = {"Referer": f"{stack.gateway_url}/ui/keys/new"}
        form = {"csrf": old, "name": "after-signout", "models": "*"}
        ended = await web.post("/ui/keys", data=form, headers=came_from)
        assert ended.status_code == 401
        assert ended.headers["content-type"].startswith("text/html")
        assert "Your session ended" in ended.text
        assert form_of(ended.text, "/ui/signin")["next"] == "/ui/keys/new"
        # The pages' scripts still get JSON.
        scripted = await web.post("/ui/keys", data=form, headers={"Accept": "application/json"})
        assert (scripted.status_code, scripted.json()) == (401, {"error": "sign in first"})

        web.cookies.clear()
        await _sign_in(web, stack)  # a new session; the old tab still holds the old token
        stale = await web.post("/ui/keys", data=form, headers=came_from)
        assert stale.status_code == 403
        assert "That page was opened before your latest sign-in" in stale.text
        assert 'href="/ui/keys/new">Back to the page</a>' in stale.text
        scripted = await web.post("/ui/keys", headers={"X-CSRF-Token": old})
        assert (scripted.status_code, scripted.json()) == (
            403,
            {"error": "missing or wrong CSRF token"},
        )
    assert (await stack.admin("GET", "/keys?q=after-signout")).json()["total"] == 0


async def test_acting_on_a_key_or_secret_deleted_elsewhere_says_so(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Saving or revoking a key deleted through the API, rotating a secret deleted elsewhere
    and a second delete of a secret ended on "Something went wrong ... Status 404"."""
    web, csrf = signed_in
    record = await _new_key(stack, "deleted-elsewhere")
    path = f"/ui/keys/{record.id}"
    form = form_of((await web.get(path)).text, path)
    assert (await stack.admin("DELETE", f"/keys/{record.id}")).status_code == 200
    saved = await web.post(path, data={**form, "owner": "too late"})
    revoked = await web.post(f"{path}/revoke", data={"csrf": csrf})
    for answer, outcome in (
        (saved, "so your changes were not saved"),
        (revoked, "so there is nothing to revoke"),
    ):
        assert answer.status_code == 404
        assert f"This key ({record.id}) was deleted by someone else, {outcome}" in answer.text
        assert 'href="/ui/keys">Back to the keys</a>' in answer.text
        assert "Something went wrong" not in answer.text

    stored = await stack.admin("PUT", "/secrets/deleted-elsewhere", {"value": "sk-gone-1"})
    assert stored.status_code == 200, stored.text
    page = (await web.get("/ui/secrets/deleted-elsewhere/delete")).text
    confirm = {
        **form_of(page, "/ui/secrets/deleted-elsewhere/delete"),
        "confirm": "deleted-elsewhere",
    }
    assert (await stack.admin("DELETE", "/secrets/deleted-elsewhere")).status_code == 200
    rotate = {"csrf": csrf, "value": "sk-gone-2"}
    rotated = await web.post("/ui/secrets/deleted-elsewhere/rotate", data=rotate)
    assert rotated.status_code == 303
    shown = (await web.get(rotated.headers["location"])).text
    assert "deleted-elsewhere was deleted by someone else, so it was not rotated" in shown
    assert 'value="deleted-elsewhere"' in shown  # the name is kept in the Store form
    deleted = await web.post("/ui/secrets/deleted-elsewhere/delete", data=confirm)
    assert deleted.status_code == 303
    shown = (await web.get(deleted.headers["location"])).text
    assert "deleted-elsewhere was already deleted by someone else" in shown
