"""Client keys: a searchable, paged list (from the in-memory index, spend for the page's keys
only), create and rotate (the secret shown once), settings, revoke, and each key's spend and
usage.

A key whose stored record cannot be read is listed apart, with a Revoke button: revoking
rewrites it as a readable, revoked record (see :mod:`switchyard.admin.key_damage`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.responses import Response

from switchyard.admin.audit_words import created_words, update_seen, update_words
from switchyard.admin.bodies import KeyFields, key_call, refusal
from switchyard.admin.key_idempotency import Caller, body_digest
from switchyard.admin.key_once import Once, create_once, creates_of
from switchyard.admin.key_rotation import grace_words
from switchyard.admin.key_rules import number_problem, rule_text
from switchyard.admin.keys import namesake_warning, public_record
from switchyard.admin.spend import SpendUnavailable
from switchyard.admin.ui.context import Route, Ui
from switchyard.admin.ui.forms import place
from switchyard.admin.ui.pages.tables import Problem, conflict, digest
from switchyard.errors import Conflict, InvalidRequest, NotFound
from switchyard.schemas.keys import MAX_EXPIRES_AT, ClientKey

FIELDS = [
    "name",
    "owner",
    "team",
    "models",
    "rpm",
    "tpm",
    "max_parallel",
    "budget_usd",
    "budget_period",
    "expires",
]
PERIODS = ["daily", "weekly", "monthly", "total"]
# A New key form's idempotency values (:func:`_form_value`), and the body they are kept
# with: the same for every form, so a form sent again with other fields names its first key.
FORM_PREFIX = "ui-form "  # a space: never an API or CLI value (valid_value)
FORM_BODY = body_digest({"form": "new key"})
FORM = Caller("the New key form")  # (no way around the bucket: see create_key)
Reserve = Callable[[], Awaitable[bool]]
# How long the old secret keeps working, as the key page offers it (the API and the CLI take
# any number of seconds up to a day).
GRACES = {"0": "refused at once", "3600": "works 1 more hour", "86400": "works 1 more day"}


async def keys_page(ui: Ui) -> Response:
    q, state, team = ui.query("q"), ui.query("state"), ui.query("team")
    offset, limit = ui.int_query("offset", 0), ui.int_query("limit", 50, 1, 500)
    page = ui.admin.index.search(q, state=state, team=team, offset=offset, limit=limit)
    # Keys live in NATS, spend in Valkey: during a Valkey outage the list still shows (an
    # operator may need to find and revoke a key), with spend blank and the reason said.
    spend: list[dict[str, Any] | None]
    unavailable = ""
    try:
        spend = list(await ui.admin.spend.for_keys(page.keys))
    except SpendUnavailable as exc:
        spend, unavailable = [None] * len(page.keys), exc.message
    qs = urlencode({k: v for k, v in (("q", q), ("state", state), ("team", team)) if v})
    return ui.page(
        "keys.html",
        "keys",
        "Client keys",
        rows=list(zip(page.keys, spend, strict=True)),
        spend_unavailable=unavailable,
        total=page.total,
        count=page.count,
        q=q,
        state=state,
        team=team,
        teams=ui.admin.index.teams(),
        offset=offset,
        limit=limit,
        base=ui.root + "/ui/keys?" + (qs + "&" if qs else ""),
        damaged=ui.admin.index.damaged(),
    )


def _values(key: ClientKey | None) -> dict[str, Any]:
    if key is None:
        return {
            "models": "*",
            "budget_period": "monthly",
            "rpm": 0,
            "tpm": 0,
            "max_parallel": 0,
            "budget_usd": 0,
        }
    return {
        "name": key.name,
        "owner": key.owner,
        "team": key.team,
        "models": ", ".join(key.models),
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_parallel": key.max_parallel,
        "budget_usd": key.budget_usd,
        "budget_period": key.budget_period,
        "expires": _day(key.expires_at),
        "digest": digest(key),
    }


def _day(stamp: float) -> str:
    """``stamp`` as the form's UTC date and time (to the minute: a value left as shown is not
    written back, so a key keeps its seconds); one no calendar holds (set through the API
    before expiries were bounded) as its number, so the page still opens."""
    if not stamp:
        return ""
    try:
        return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M")
    except (OverflowError, OSError, ValueError):
        return f"{stamp:g}"


def _expiry(text: str) -> tuple[float | None, str]:
    """(unix seconds, or None with the form's reason) for a typed expiry: a UTC date and
    time as ``datetime-local`` sends it, or a date alone (its first minute)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None, "Enter a date and time in UTC (YYYY-MM-DD HH:MM), or leave it empty for never."
    stamp = (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
    if stamp <= time.time():
        return None, "That time has passed (times are UTC): pick a later one, or leave it empty."
    if stamp > MAX_EXPIRES_AT:
        return None, "Pick a date before the year 10000, or leave it empty for never."
    return stamp, ""


def _fields(ui: Ui) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(as typed, the API body, per-field errors)."""
    values = {k: ui.form.get(k) for k in FIELDS}
    body, errors = _parse(values)
    values["digest"] = ui.form.get("digest")
    return values, body, errors


def _parse(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the API body, per-field errors) for the form's ``values``: as typed, or as the form
    shows a record (:func:`_values`), so the two can be compared field by field."""
    text = {k: str(values.get(k) if values.get(k) is not None else "") for k in FIELDS}
    body: dict[str, Any] = {k: text[k] for k in ("name", "owner", "team")}
    if text["budget_period"]:
        body["budget_period"] = text["budget_period"]
    errors: dict[str, str] = {}
    body["models"] = [m.strip() for m in text["models"].split(",") if m.strip()] or ["*"]
    for key, kind in (("rpm", int), ("tpm", int), ("max_parallel", int), ("budget_usd", float)):
        try:
            number = kind(text[key] or 0)
        except ValueError:
            errors[key] = "Enter a number (0 for no limit)."
            continue
        # float() reads "inf", "nan" and "1e309": refused here as the API refuses them.
        if number_problem(key, number) is None:
            body[key] = number
        else:
            errors[key] = rule_text(key)
    if text["expires"]:
        stamp, problem = _expiry(text["expires"])
        if stamp is None:
            errors["expires"] = problem
        else:
            body["expires_at"] = stamp
    else:
        body["expires_at"] = 0.0
    if not text["name"]:
        errors["name"] = "Name the key, e.g. the app that will use it."
    return body, errors


def _placed(exc: InvalidRequest) -> dict[str, str]:
    """The API's refusal beside the form field it concerns (``expires_at`` is the form's
    ``expires``: an expiry passed while the form was sent is said in the form's words)."""
    if exc.param == "expires_at":
        return {"expires": "That time has passed (times are UTC): pick a later one."}
    return {place(exc.param, FIELDS) or "": exc.message}


async def _checked(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return msgspec.convert(body, KeyFields).changes()
    except msgspec.ValidationError as exc:
        raise refusal(exc, KeyFields, "key") from None


def _form_value(ui: Ui, token: str) -> str:
    """The idempotency value of a New key form's one-time token, bound to the session (its
    CSRF secret, which every replica derives alike): a token answers only the session it
    was posted in, and never an API caller's ``Idempotency-Key`` (another prefix)."""
    mac = hmac.new(ui.session.csrf.encode(), token.encode(), hashlib.sha256).hexdigest()
    return FORM_PREFIX + mac


async def new_key(ui: Ui) -> Response:
    return ui.page(
        "key_form.html",
        "keys",
        "New client key",
        values={**_values(None), "once": secrets.token_urlsafe(16)},
        errors={},
        periods=PERIODS,
        key=None,
    )


async def create_key(ui: Ui) -> Response:
    """Creates a key once per form: reloading the "Key created" page (the browser posts the
    form again), going back and sending it again, a double click or a browser's retry after
    a slow answer made a second active key of the same name, the first one's secret lost.

    The form's one-time token is the create's idempotency value, in the bucket an API
    ``Idempotency-Key`` uses (:mod:`switchyard.admin.key_once`): every replica sees it, so a
    form sent again on another one (or after a restart) is answered too. Any second sending
    of a form names the key the first made, whatever its fields then say (one key per form).
    A form without a token (a script's) always creates.

    Where the bucket is refused (the NATS config of an older version, not rendered again
    since the upgrade) the form is refused too (a 503 saying what to do), at once for a while
    after the first refusal: it does not fall back to a plain create. That create would be
    unguarded on every replica (a reload of "Key created" makes a second key, its secret
    lost: what the token is for), the refusal is one documented upgrade step away from
    gone, and the CLI's ``keys create`` (without ``--idempotency-key``) still creates."""
    values, body, errors = _fields(ui)
    once = values["once"] = ui.form.get("once")
    try:
        if errors:
            raise InvalidRequest(next(iter(errors.values())))
        fields = await _checked(body)
        name = fields.pop("name")

        async def make(key_id: str | None, reserve: Reserve | None) -> dict[str, Any]:
            return await _make(ui, name, fields, key_id, reserve)

        if once:
            value = _form_value(ui, once)
            store = creates_of(ui.admin)
            created = await create_once(store, ui.admin.keys, value, FORM_BODY, make, caller=FORM)
        else:
            created = Once(await make(None, None))
    except InvalidRequest as exc:
        errors = errors or _placed(exc)
        return ui.page(
            "key_form.html",
            "keys",
            "New client key",
            values=values,
            errors=errors,
            periods=PERIODS,
            key=None,
            status=400,
        )
    except Conflict as exc:
        if exc.code != "idempotency_key_in_use":
            raise
        return _sent_before(ui, "")
    if created.replay:
        return _sent_before(ui, created.answer["record"]["id"])
    return ui.page(
        "key_created.html",
        "keys",
        "Key created",
        api_key=created.answer["key"],
        key=created.answer["record"],
        warning=created.answer.get("warning", ""),
    )


async def _make(
    ui: Ui, name: str, fields: dict[str, Any], key_id: str | None, reserve: Reserve | None
) -> dict[str, Any]:
    """The key made and audited: the first answer, as the API's (``key``, ``record``, and
    ``warning`` when other keys have its name)."""
    api_key, record = await key_call(
        ui.admin.keys.create(name, key_id=key_id, reserve=reserve, **fields)
    )
    await ui.audit("key.create", record.id, created_words(record))
    doc: dict[str, Any] = {"key": api_key, "record": public_record(record)}
    others = await ui.admin.keys.namesakes(record)
    if others:
        doc["warning"] = namesake_warning(record.name, others)
    return doc


def _sent_before(ui: Ui, key_id: str) -> Response:
    """A New key form sent again: says which key it made (``key_id``), or (none) that its
    first sending is still being handled.

    The key is named by the id its first answer kept: the index, which gives its name and
    last four, follows the bucket a moment behind (a quick reload) and drops a key deleted
    since, and then said "No key was created" of a form that had created one."""
    return ui.page(
        "key_resent.html",
        "keys",
        "No second key created",
        key=ui.admin.index.get(key_id) if key_id else None,
        key_id=key_id,
        status=409,
    )


async def _find(ui: Ui) -> ClientKey:
    """The key as stored now, read from the bucket (one get: the index knows where). Not the
    index's copy, which follows the bucket a moment behind: the page a save redirects to
    showed the old values, and its old digest made the next Save a false "changed by
    someone else"."""
    return await key_call(ui.admin.keys.find(ui.request.path_params["key_id"]))


async def key_page(
    ui: Ui,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    conflicted: bool = False,
) -> Response:
    try:
        key = await _find(ui)
    except Conflict as exc:
        return _unreadable(ui, exc)
    spend: dict[str, Any] | None = None
    usage: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    unavailable = ""
    try:  # as on the list: the key's settings and Revoke work while Valkey is down
        spend = (await ui.admin.spend.for_keys([key]))[0]
        usage = await ui.admin.spend.member_days("key", key.id, 30)
        models = await ui.admin.spend.key_models(key.id, days=30)
    except SpendUnavailable as exc:
        unavailable = exc.message
    return ui.page(
        "key.html",
        "keys",
        key.name,
        key=key,
        record=public_record(key),
        spend=spend,
        usage=usage,
        models=models,
        spend_unavailable=unavailable,
        values=values or _values(key),
        errors=errors or {},
        periods=PERIODS,
        graces=GRACES,
        conflicted=conflicted,
        status=status,
    )


def _gone(ui: Ui, outcome: str) -> Response:
    """A key deleted by someone else (the API, the CLI) while its page was open: said so,
    not as a bare 404."""
    key_id = ui.request.path_params["key_id"]
    message = f"This key ({key_id}) was deleted by someone else, {outcome}."
    return ui.page(
        "error.html",
        "keys",
        "Key deleted",
        error=NotFound(message),
        back=ui.root + "/ui/keys",
        back_label="Back to the keys",
        status=404,
    )


def _unreadable(ui: Ui, exc: Conflict) -> Response:
    """A key whose record cannot be read: back to the list, which offers to revoke it."""
    return ui.redirect("/ui/keys", ("error", exc.message[:1].upper() + exc.message[1:]))


async def update_key(ui: Ui) -> Response:
    """Saves the fields the admin changed, and only if the key is still as the form showed
    it: a form that sent every field put back what the CLI, the API or another tab had set
    meanwhile (a budget back to 0, unlimited), unnoticed, and audited every field as changed."""
    values, body, errors = _fields(ui)
    try:
        key = await _find(ui)
    except Conflict as exc:
        return _unreadable(ui, exc)
    except NotFound:
        return _gone(ui, "so your changes were not saved")
    as_shown = _values(key)
    shown, _ = _parse(as_shown)
    changed = {k: v for k, v in body.items() if shown.get(k) != v}
    # A field left as shown is not checked again: one the form cannot show as it is stored
    # (an expiry no calendar holds) no longer blocks saving the others.
    errors = {k: v for k, v in errors.items() if values[k] != str(as_shown.get(k, ""))}

    def unchanged(current: ClientKey) -> None:
        if digest(current) != values["digest"]:
            raise conflict(f"Key {current.name}")

    try:
        if errors:
            raise InvalidRequest(next(iter(errors.values())))
        unchanged(key)
        if not changed:
            return ui.redirect(f"/ui/keys/{key.id}", ("ok", "Nothing to save: no setting changed."))
        fields = await _checked(changed)
        record, was = await key_call(update_seen(ui.admin.keys, key.id, fields, unchanged))
    except InvalidRequest as exc:
        return await key_page(ui, values, errors or _placed(exc), 400)
    except Problem as problem:
        return await key_page(ui, values, problem.errors, problem.status, conflicted=True)
    except NotFound:
        return _gone(ui, "so your changes were not saved")
    await ui.audit("key.update", record.id, update_words(was, record, fields))
    return ui.redirect(
        f"/ui/keys/{record.id}", ("ok", "Saved. Every edge applies it within a second.")
    )


async def revoke_key(ui: Ui) -> Response:
    # By id, not through the index's record: a key whose record cannot be read has none.
    try:
        record = await key_call(ui.admin.keys.revoke(ui.request.path_params["key_id"]))
    except NotFound:
        return _gone(ui, "so there is nothing to revoke: it is refused everywhere")
    await ui.audit("key.revoke", record.id, f"name {record.name!r}")
    return ui.redirect(
        f"/ui/keys/{record.id}",
        ("ok", f"Revoked {record.name}: refused everywhere within a second."),
    )


async def rotate_key(ui: Ui) -> Response:
    """A new secret for the key, shown once. Only for the key as its page showed it (the
    page's digest): reloading the page that shows the secret posts the form again, and a
    second rotation would have replaced the secret just shown, unseen."""
    key_id = ui.request.path_params["key_id"]
    shown = ui.form.get("digest") or ""
    grace_text = ui.form.get("grace") or "0"
    grace = int(grace_text) if grace_text in GRACES else -1  # refused by the store: 400

    def unchanged(current: ClientKey) -> None:
        if digest(current) != shown:
            raise _Changed

    try:
        api_key, record = await key_call(ui.admin.keys.rotate(key_id, grace, check=unchanged))
    except _Changed:
        return ui.redirect(
            f"/ui/keys/{key_id}",
            (
                "error",
                "No new secret was made: the key was rotated or changed since its page was "
                "shown (a reload of the page with a new secret sends the form again). Check "
                "the key and rotate again if needed.",
            ),
        )
    except NotFound:
        return _gone(ui, "so no new secret was made")
    except Conflict as exc:
        return _unreadable(ui, exc)
    except InvalidRequest as exc:
        return ui.redirect(f"/ui/keys/{key_id}", ("error", exc.message))
    await ui.audit("key.rotate", record.id, grace_words(grace))
    return ui.page(
        "key_created.html",
        "keys",
        "New secret",
        api_key=api_key,
        key=record,
        warning="",
        rotated=grace_words(grace),
    )


class _Changed(Exception):
    """The key is not as its page showed it: no rotation."""


ROUTES: list[Route] = [
    ("/keys", "GET", keys_page),
    ("/keys/new", "GET", new_key),
    ("/keys", "POST", create_key),
    ("/keys/{key_id}", "GET", key_page),
    ("/keys/{key_id}", "POST", update_key),
    ("/keys/{key_id}/revoke", "POST", revoke_key),
    ("/keys/{key_id}/rotate", "POST", rotate_key),
]
