"""The gateway's management API (``/admin/v1``): providers, routes, deployments, secrets.

Every call needs the admin token (``Authorization: Bearer``; the read-only token makes GETs
only: :mod:`switchyard.admin.access`). The gateway holds no routing state: it talks to the
server zone only through the exported, admin-only service subjects
(``control.v1.admin.*``, ``secrets.v1.admin.*``) on a second NATS connection made with the
admin identity. Route edits are compare-and-set (see :class:`ControlClient`), so two admins
never overwrite each other. Bodies are decoded with the same msgspec types the route table
uses, with unknown fields refused, so a typo is a 400 naming the field, not a silent no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from fastapi import APIRouter, Security
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from switchyard.admin.access import authorize
from switchyard.admin.answer_types import EventStream, JsonLines
from switchyard.admin.api_audit import api_audit as _audit
from switchyard.admin.audit_export import ENDPOINT as EXPORT_AUDIT
from switchyard.admin.audit_list import audit_list
from switchyard.admin.audit_words import delete_said, update_seen, update_words
from switchyard.admin.batch_cancel import ENDPOINT as CANCEL_BATCH
from switchyard.admin.batch_view import batch_records as _batches
from switchyard.admin.batch_view import batch_view as _batch_view
from switchyard.admin.bodies import (
    KeyFields,
    SecretBody,
    decode,
    key_patch,
    positive_int,
    refuse_literal_keys,
)
from switchyard.admin.bodies import key_call as _keys
from switchyard.admin.context import AdminContext
from switchyard.admin.key_create import IDEMPOTENCY_PARAMETER
from switchyard.admin.key_create import create_key as _create_key
from switchyard.admin.key_list import key_list as _key_list
from switchyard.admin.key_rotation import RotateBody, grace_words, rotated_doc
from switchyard.admin.keys import public_record
from switchyard.admin.one_reads import ENDPOINTS as ONE_READS
from switchyard.admin.overview import deployments as _deployments
from switchyard.admin.overview import overview as _overview
from switchyard.admin.path_names import secret_name, table_name
from switchyard.admin.queries import (
    QUERY_PARAMS,
    check_params,
    per_day,
    ranking_query,
    spend_days,
)
from switchyard.admin.read_slots import SEND_TIMEOUT_S, STREAM, HeldStream, role_of
from switchyard.admin.secret_delete import refuse_in_use, users_of
from switchyard.admin.session_list import BODIES as SESSION_BODIES
from switchyard.admin.session_list import ENDPOINTS as SESSIONS
from switchyard.admin.spend import SpendUnavailable
from switchyard.admin.token_audit import REFUSED_CODES, audit_refused
from switchyard.bus import subjects
from switchyard.errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)
from switchyard.runtime.http import JSON, error_response
from switchyard.runtime.openapi import error_responses, inline_schema
from switchyard.runtime.provider_changes import edit_seen, secret_delete_words, table_words
from switchyard.runtime.request_body import read_body
from switchyard.schemas.control import PutTable, TableState
from switchyard.schemas.openai import error_body
from switchyard.schemas.routing import Provider, Route, RouteTable, is_deployment_id
from switchyard.schemas.secrets import written_words

T = TypeVar("T")
# The largest body the API takes (413 past it, before more is read). Its largest legitimate
# body is a whole route table (PUT /routes): a thousand routes are a few hundred KiB, and the
# table travels to the control service as one NATS message (max_payload 8 MiB).
MAX_BODY_BYTES = 4 * 1024 * 1024
STREAM_INTERVAL_S = 1.0
_ENCODE = msgspec.json.Encoder()


def _ok(doc: Any, status: int = 200) -> Response:
    return Response(_ENCODE.encode(doc), status_code=status, media_type=JSON)


async def _audit_write(
    c: AdminContext, request: Request, state: TableState, action: str, target: str, *was: RouteTable
) -> None:
    """Record a route table write, naming provider changes against the table it replaced
    (``was``); a write that changed nothing (``changed: false``) is not recorded."""
    if state.changed is not False:
        detail = table_words(was[0] if was else state.table, state.table, state.revision)
        await _audit(c, request, action, target, detail)


async def _body(request: Request) -> bytes:
    """The request's body, refused (413) past :data:`MAX_BODY_BYTES` before more is read."""
    return await read_body(request, MAX_BODY_BYTES)


Handler = Callable[[Request, AdminContext], Awaitable[Response]]

# Documents the admin token in the OpenAPI document (the check itself is AdminAuth's, in
# _context: auto_error=False, so this dependency never answers a request by itself).
_ADMIN_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token (admin.token_file; read-only: admin.readonly_token_file)",
)
# Statuses any admin call may answer besides success, each an OpenAI-shaped error.
ADMIN_ERRORS = (400, 401, 403, 404, 409, 413, 429, 500, 503, 504)


class AdminApi:
    """The ``/admin/v1`` endpoints; :meth:`router` mounts them on the gateway app."""

    def __init__(self, context: Callable[[], AdminContext | None]) -> None:
        self._current = context

    def router(self) -> APIRouter:
        router = APIRouter(
            prefix="/admin/v1", tags=["admin"], dependencies=[Security(_ADMIN_TOKEN)]
        )
        for path, method, summary, handler in self._endpoints():
            name = handler.__name__
            body = _BODIES.get(name)
            extra: dict[str, Any] | None = None
            if body is not None:
                content = {"application/json": {"schema": inline_schema(body)}}
                required = name not in ("test_deployment", "rotate_key")
                extra = {"requestBody": {"required": required, "content": content}}
                if name == "create_key":
                    extra["parameters"] = [IDEMPOTENCY_PARAMETER]
            router.add_api_route(
                path,
                self._guarded(handler, QUERY_PARAMS.get(name, ())),
                methods=[method],
                summary=summary,
                name=name,
                status_code=201 if name == "create_key" else 200,
                response_class={"stream": EventStream, "export_audit": JsonLines}.get(
                    name, JSONResponse
                ),
                responses=error_responses(ADMIN_ERRORS),
                openapi_extra=extra,
            )
        return router

    def _context(self, request: Request) -> AdminContext:
        context = self._current()
        if context is None:
            raise ServiceUnavailable("the management API is starting", code="starting")
        authorize(context, request)  # the token; a read-only one only reads (403)
        return context

    def _guarded(
        self, handler: Handler, params: tuple[str, ...]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                context = self._context(request)
                check_params(request.query_params, params)  # (queries.py: why)
                return await handler(request, context)
            except ApiError as exc:
                if exc.code in REFUSED_CODES:  # a wrong token: audited, a minute apart
                    await audit_refused(self._current(), request)
                return error_response(exc)

        return guarded

    def _endpoints(self) -> list[tuple[str, str, str, Handler]]:
        return [
            (
                "/routes",
                "GET",
                "The route table (providers and routes) and its revision",
                self.get_table,
            ),
            ("/routes", "PUT", "Replace the whole route table (compare-and-set)", self.put_table),
            ("/routes/{alias:path}", "GET", "One route", self.get_route),
            ("/routes/{alias:path}", "PUT", "Create or replace a route", self.put_route),
            ("/routes/{alias:path}", "DELETE", "Remove a route", self.delete_route),
            ("/providers", "GET", "Every provider", self.get_providers),
            ONE_READS[0],
            (
                "/providers/{name}",
                "PUT",
                "Create or replace a provider (keys by secret name)",
                self.put_provider,
            ),
            (
                "/providers/{name}",
                "DELETE",
                "Remove a provider no route uses",
                self.delete_provider,
            ),
            (
                "/deployments",
                "GET",
                "Deployments with cooldown and queue depth",
                self.get_deployments,
            ),
            (
                "/deployments/history",
                "GET",
                "Per-second queue depth and traffic of every deployment (?seconds=900)",
                self.deployment_history,
            ),
            (
                "/overview",
                "GET",
                "Processes, deployments (queues, traffic, cooldowns), totals and spend today",
                self.overview,
            ),
            (
                "/stream",
                "GET",
                "The overview once a second, as server-sent events (event: overview)",
                self.stream,
            ),
            (
                "/deployments/{deployment}/cooldown",
                "DELETE",
                "End a cooldown now",
                self.clear_cooldown,
            ),
            (
                "/deployments/{deployment}/test",
                "POST",
                "Send one request to a deployment",
                self.test_deployment,
            ),
            (
                "/keys",
                "GET",
                "Client keys with their spend, newest first "
                "(?q=&state=&owner=&team=&name=&after=KEY_ID&offset=0&limit=50)",
                self.list_keys,
            ),
            (
                "/keys",
                "POST",
                "Create a client key (the key is shown once; an Idempotency-Key header makes "
                "a retry answer the first create)",
                self.create_key,
            ),
            ("/keys/{key_id}", "GET", "One client key and its spend", self.get_key),
            ("/keys/{key_id}", "PATCH", "Change a key's models, limits or budget", self.update_key),
            (
                "/keys/{key_id}/revoke",
                "POST",
                "Revoke a key (every edge, within a second)",
                self.revoke_key,
            ),
            ("/keys/{key_id}", "DELETE", "Delete a key", self.delete_key),
            (
                "/keys/{key_id}/rotate",
                "POST",
                "Give a key a new secret, shown once (id, limits, spend stay; body: grace_seconds)",
                self.rotate_key,
            ),
            (
                "/spend",
                "GET",
                "Daily spend of the costliest keys and models (?days=7&per_day=100)",
                self.daily_spend,
            ),
            (
                "/spend/ranking",
                "GET",
                "Keys, teams, models or deployments by spend "
                "(?by=key|team|model|deployment&days=7&offset=0&limit=50); "
                "one key's models with ?by=model&key=KEY_ID",
                self.spend_ranking,
            ),
            (
                "/audit",
                "GET",
                "Admin actions, newest first (?q=&kind=&via=&after=SEQ&offset=0&limit=50)",
                self.audit,
            ),
            EXPORT_AUDIT,
            *SESSIONS,
            ("/batches", "GET", "Every Batch API job: status, progress, key", self.list_batches),
            ("/batches/{batch_id}", "GET", "One Batch API job", self.get_batch),
            CANCEL_BATCH,
            ("/secrets", "GET", "Stored provider keys (metadata only)", self.list_secrets),
            ONE_READS[1],
            (
                "/secrets/{name}",
                "PUT",
                "Store a provider key (body: value, provider)",
                self.put_secret,
            ),
            (
                "/secrets/{name}/rotate",
                "POST",
                "Replace an existing key (body: value)",
                self.rotate_secret,
            ),
            (
                "/secrets/{name}",
                "DELETE",
                "Delete a key and all its versions (one a provider uses: ?force=true, else 409)",
                self.delete_secret,
            ),
        ]

    async def get_table(self, request: Request, c: AdminContext) -> Response:
        return _ok(await c.control.table())

    async def put_table(self, request: Request, c: AdminContext) -> Response:
        body = await _body(request)
        refuse_literal_keys(body)
        put = decode(body, PutTable, "route table")
        before = (await c.control.table()).table  # an older control service's words only
        state, words = await c.control.put_table_said(put.table, put.expected_revision)
        if words is None:  # (it may describe a write that landed between as this one's)
            await _audit_write(c, request, state, "routes.replace", "", before)
        else:  # said by control against the table this write replaced
            await _audit(c, request, "routes.replace", "", words)
        return _ok(state)

    async def get_route(self, request: Request, c: AdminContext) -> Response:
        alias = request.path_params["alias"]
        route = (await c.control.table()).table.routes.get(alias)
        if route is None:
            raise NotFound(f"no route `{alias}`", param="alias")
        return _ok(route)

    async def put_route(self, request: Request, c: AdminContext) -> Response:
        alias = table_name(request.path_params["alias"], "route alias", "alias")
        route = decode(await _body(request), Route, "route")
        state = await c.control.edit(lambda t: _with(t, routes={**t.routes, alias: route}))
        await _audit_write(c, request, state, "route.put", alias)
        return _ok(state)

    async def delete_route(self, request: Request, c: AdminContext) -> Response:
        alias = request.path_params["alias"]

        def change(t: RouteTable) -> RouteTable:
            if alias not in t.routes:
                raise NotFound(f"no route `{alias}`", param="alias")
            users = sorted(a for a, r in t.routes.items() if alias in r.fallbacks)
            if users:
                raise Conflict(
                    f"routes {', '.join(users)} fall back to `{alias}`; change them first"
                )
            return _with(t, routes={a: r for a, r in t.routes.items() if a != alias})

        state = await c.control.edit(change)
        await _audit_write(c, request, state, "route.delete", alias)
        return _ok(state)

    async def get_providers(self, request: Request, c: AdminContext) -> Response:
        return _ok((await c.control.table()).table.providers)

    async def put_provider(self, request: Request, c: AdminContext) -> Response:
        name = table_name(request.path_params["name"], "provider name", "name")
        body = await _body(request)
        refuse_literal_keys(body, name)
        provider = decode(body, Provider, "provider")
        state, was = await edit_seen(
            c.control, lambda t: _with(t, providers={**t.providers, name: provider})
        )
        await _audit_write(c, request, state, "provider.put", name, was)
        return _ok(state)

    async def delete_provider(self, request: Request, c: AdminContext) -> Response:
        name = request.path_params["name"]

        def change(t: RouteTable) -> RouteTable:
            if name not in t.providers:
                raise NotFound(f"no provider `{name}`", param="name")
            users = sorted(
                a for a, r in t.routes.items() if any(d.provider == name for d in r.deployments)
            )
            if users:
                raise Conflict(
                    f"routes {', '.join(users)} use provider `{name}`; change them first"
                )
            return _with(t, providers={n: p for n, p in t.providers.items() if n != name})

        state, was = await edit_seen(c.control, change)
        await _audit_write(c, request, state, "provider.delete", name, was)
        return _ok(state)

    async def get_deployments(self, request: Request, c: AdminContext) -> Response:
        return _ok({"deployments": await _deployments(c)})

    async def deployment_history(self, request: Request, c: AdminContext) -> Response:
        seconds = positive_int(request.query_params.get("seconds") or "900", "seconds")
        return _ok(await c.control.history(seconds))

    async def overview(self, request: Request, c: AdminContext) -> Response:
        return _ok(await _overview(c))

    async def stream(self, request: Request, c: AdminContext) -> Response:
        async def events() -> AsyncIterator[bytes]:
            while not await request.is_disconnected():
                try:
                    doc = _ENCODE.encode(await _overview(c))
                    yield b"event: overview\ndata: " + doc + b"\n\n"
                except ApiError as exc:  # the control service is down: say so, keep trying
                    yield b"event: error\ndata: " + error_body(exc) + b"\n\n"
                await asyncio.sleep(STREAM_INTERVAL_S)

        held = c.reads.hold(STREAM, role_of(request))  # 429 past the role's bound
        no_cache = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        sse, wait = "text/event-stream", SEND_TIMEOUT_S  # (a stalled reader's slot comes back)
        return HeldStream(events(), held, media_type=sse, headers=no_cache, send_timeout_s=wait)

    async def clear_cooldown(self, request: Request, c: AdminContext) -> Response:
        deployment = request.path_params["deployment"]
        # The control service clears any id it is given; a typo must not read as done (nor be
        # audited as a success), so the id is checked against the live route table first.
        if not is_deployment_id(deployment):  # not even a possible id: the caller's mistake
            raise InvalidRequest(
                "not a deployment id", param="deployment", code="invalid_deployment"
            )
        if deployment not in (await c.control.table()).table.deployments():
            raise NotFound(f"no deployment `{deployment}`", param="deployment")
        await c.control.clear_cooldown(deployment)
        await _audit(c, request, "cooldown.clear", deployment)
        return _ok({"cleared": True})

    async def test_deployment(self, request: Request, c: AdminContext) -> Response:
        deployment = request.path_params["deployment"]
        table = (await c.control.table()).table
        alias = next(
            (a for a, r in table.routes.items() if any(d.id == deployment for d in r.deployments)),
            None,
        )
        if alias is None:
            raise NotFound(f"no deployment `{deployment}`", param="deployment")
        raw = await _body(request)
        body = decode(raw, dict[str, Any], "test request") if raw.strip() else {}
        payload = {
            "messages": [{"role": "user", "content": "Reply with the word: pong"}],
            "max_tokens": 5,
            **body,
            "model": alias,
        }
        env = c.llm.envelope(timeout=30).with_(pin=deployment)
        began = time.perf_counter()
        result: dict[str, Any] = {"deployment": deployment}
        try:
            reply = await c.llm.request(subjects.CHAT, _ENCODE.encode(payload), env)
        except ApiError as exc:
            result.update(ok=False, status=exc.status, error=exc.message)
        else:
            result.update(ok=True, status=200, response=msgspec.json.decode(reply.body))
        result["latency_ms"] = round((time.perf_counter() - began) * 1000, 1)
        await _audit(
            c, request, "deployment.test", deployment, f"status {result['status']}", ok=result["ok"]
        )
        return _ok(result)

    async def list_keys(self, request: Request, c: AdminContext) -> Response:
        return _ok(await _key_list(c, request.query_params))

    async def create_key(self, request: Request, c: AdminContext) -> Response:
        return await _create_key(c, request, await _body(request), _audit)

    async def get_key(self, request: Request, c: AdminContext) -> Response:
        record = await _keys(c.keys.find(request.path_params["key_id"]))
        try:
            return _ok(public_record(record, await c.spend.for_key(record)))
        except SpendUnavailable as exc:  # the record is still worth showing (see list_keys)
            return _ok({**public_record(record), "spend": None, "spend_unavailable": exc.message})

    async def update_key(self, request: Request, c: AdminContext) -> Response:
        fields = key_patch(await _body(request))  # (null refused: it read as "keep")
        record, was = await _keys(update_seen(c.keys, request.path_params["key_id"], fields))
        await _audit(c, request, "key.update", record.id, update_words(was, record, fields))
        return _ok(public_record(record))

    async def revoke_key(self, request: Request, c: AdminContext) -> Response:
        record = await _keys(c.keys.revoke(request.path_params["key_id"]))
        await _audit(c, request, "key.revoke", record.id, f"name {record.name!r}")
        return _ok(public_record(record))

    async def rotate_key(self, request: Request, c: AdminContext) -> Response:
        raw = await _body(request)
        grace = (decode(raw, RotateBody, "rotation") if raw.strip() else RotateBody()).grace_seconds
        api_key, record = await _keys(c.keys.rotate(request.path_params["key_id"], grace))
        await _audit(c, request, "key.rotate", record.id, grace_words(grace))
        response = _ok(rotated_doc(api_key, record, grace))
        response.headers["Cache-Control"] = "no-store"  # it holds the key's only plaintext
        return response

    async def delete_key(self, request: Request, c: AdminContext) -> Response:
        words = await _keys(delete_said(c.keys, request.path_params["key_id"]))
        await _audit(c, request, "key.delete", request.path_params["key_id"], words)
        return _ok({"deleted": True})

    async def daily_spend(self, request: Request, c: AdminContext) -> Response:
        days = spend_days(request.query_params)
        top = per_day(request.query_params)
        return _ok({"days": await c.spend.daily(days=days, per_day=top)})

    async def spend_ranking(self, request: Request, c: AdminContext) -> Response:
        q = ranking_query(request.query_params)
        if q.key:  # one key's models, from the per key-and-model day counters
            used = await c.spend.key_models(q.key, days=q.days)
            page = used[q.offset : q.offset + q.limit]
            return _ok({"by": q.by, "key": q.key, "rows": page, "total": len(used)})
        rows, total = await c.spend.ranking(q.by, days=q.days, offset=q.offset, limit=q.limit)
        return _ok({"by": q.by, "rows": rows, "total": total})

    async def audit(self, request: Request, c: AdminContext) -> Response:
        return _ok(audit_list(c, request.query_params))

    async def list_batches(self, request: Request, c: AdminContext) -> Response:
        return _ok({"batches": [_batch_view(r) for r in _batches(c).newest_first()]})

    async def get_batch(self, request: Request, c: AdminContext) -> Response:
        batch_id = request.path_params["batch_id"]
        found = await _batches(c).find(batch_id)  # (one created a moment ago: from the bucket)
        if found is None:
            raise NotFound(f"no batch `{batch_id}`", param="batch_id")
        return _ok(_batch_view(found))

    async def list_secrets(self, request: Request, c: AdminContext) -> Response:
        return _ok({"secrets": await c.secrets.list()})

    async def put_secret(self, request: Request, c: AdminContext) -> Response:
        doc = decode(await _body(request), SecretBody, "secret")
        info = await c.secrets.put(
            secret_name(request.path_params["name"]), doc.value, doc.provider
        )
        await _audit(c, request, "secret.put", info.name, written_words(info))
        return _ok(info)

    async def rotate_secret(self, request: Request, c: AdminContext) -> Response:
        doc = decode(await _body(request), SecretBody, "secret")
        info = await c.secrets.rotate(secret_name(request.path_params["name"]), doc.value)
        await _audit(c, request, "secret.rotate", info.name, written_words(info))
        return _ok(info)

    async def delete_secret(self, request: Request, c: AdminContext) -> Response:
        """Delete a stored secret; one a provider uses only with ``?force=true`` (as the CLI's
        ``--force`` and the UI's typed name): the 409 names what it would break."""
        name, forced = request.path_params["name"], request.query_params.get("force") == "true"
        users = await users_of(c.control, name, forced=forced)
        if not forced:
            refuse_in_use(name, users)
        await c.secrets.delete(name)
        how = "forced (?force=true)" if forced else ""
        await _audit(c, request, "secret.delete", name, secret_delete_words(users, how))
        return _ok({"deleted": True})


# The request body each handler decodes, documented from the same types.
_BODIES: dict[str, Any] = {
    "put_table": PutTable,
    "put_route": Route,
    "put_provider": Provider,
    "test_deployment": dict[str, Any],
    "create_key": KeyFields,
    "update_key": KeyFields,
    "rotate_key": RotateBody,
    "put_secret": SecretBody,
    "rotate_secret": SecretBody,
    **SESSION_BODIES,
}


def _with(table: RouteTable, **changes: Any) -> RouteTable:
    return msgspec.structs.replace(table, **changes)
