"""Overview and Queues: rendered once on the server, then kept live by ``live.js`` from the
session-guarded overview stream (one event a second) and the 15-minute history.

Both list deployments in the order ``switchyard top`` does (:func:`by_attention`: cooling
down, failing, saturated, the most waiting...; then by id), on the page and in every event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.responses import Response

from switchyard.admin.overview import overview
from switchyard.admin.read_slots import SEND_TIMEOUT_S, STREAM, HeldStream
from switchyard.admin.token import Role
from switchyard.admin.ui.context import Route, Ui
from switchyard.bus import subjects
from switchyard.errors import ApiError, NotFound
from switchyard.schemas.attention import by_attention
from switchyard.schemas.monitor import Overview

STREAM_INTERVAL_S = 1.0
_ENCODE = msgspec.json.Encoder()


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_ENCODE.encode(doc), status_code=status, media_type="application/json")


async def _overview(ui: Ui) -> Overview:
    """The overview with its deployments in attention order."""
    view = await overview(ui.admin)
    return msgspec.structs.replace(view, deployments=by_attention(view.deployments))


async def _overview_or_error(ui: Ui) -> tuple[Overview | None, str]:
    try:
        return await _overview(ui), ""
    except ApiError as exc:
        return None, exc.message


def _components(view: Overview | None) -> list[dict[str, Any]]:
    """Processes grouped by component: how many, how many healthy."""
    groups: dict[str, dict[str, Any]] = {}
    for p in view.processes if view else []:
        g = groups.setdefault(p.component, {"component": p.component, "total": 0, "healthy": 0})
        g["total"] += 1
        g["healthy"] += int(p.healthy)
    return sorted(groups.values(), key=lambda g: g["component"])


def _mixed(view: Overview | None) -> set[str]:
    """``component/instance`` of every process in a broken upgrade order (marked in the table)."""
    return {
        f"{p.component}/{p.instance}"
        for v in (view.upgrade_order if view else [])
        for p in (*v.behind, *v.ahead)
    }


async def overview_page(ui: Ui) -> Response:
    view, error = await _overview_or_error(ui)
    return ui.page(
        "overview.html",
        "overview",
        "Overview",
        view=view,
        error=error,
        components=_components(view),
        mixed=_mixed(view),
        stream_period_s=STREAM_INTERVAL_S,
    )


async def queues_page(ui: Ui) -> Response:
    view, error = await _overview_or_error(ui)
    return ui.page(
        "queues.html",
        "queues",
        "Queues",
        view=view,
        error=error,
        now=time.time(),
        stream_period_s=STREAM_INTERVAL_S,
    )


async def overview_json(ui: Ui) -> Response:
    return _json(await _overview(ui))


async def stream(ui: Ui) -> Response:
    request, session = ui.request, ui.session

    async def events() -> AsyncIterator[bytes]:
        while not await request.is_disconnected():
            if session.over():  # signed out, expired or evicted: the stream ends with it
                return
            session.seen()  # a page watched live is in use (the idle limit counts from here)
            try:
                doc = _ENCODE.encode(await _overview(ui))
                yield b"event: overview\ndata: " + doc + b"\n\n"
            except ApiError as exc:  # the control service is down: say so, keep trying
                yield b"event: problem\ndata: " + _ENCODE.encode({"error": exc.message}) + b"\n\n"
            await asyncio.sleep(STREAM_INTERVAL_S)

    role = Role.READ_ONLY if session.read_only else Role.ADMIN
    held = ui.admin.reads.hold(STREAM, role)  # 429 past the role's bound
    no_cache = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return HeldStream(
        events(),
        held,
        media_type="text/event-stream",
        headers=no_cache,
        send_timeout_s=SEND_TIMEOUT_S,  # a page whose client reads nothing gives its slot back
    )


async def history(ui: Ui) -> Response:
    seconds = ui.int_query("seconds", 900, 10, 3600)
    return _json(await ui.admin.control.history(seconds))


async def end_cooldown(ui: Ui) -> Response:
    deployment = ui.request.path_params["deployment"]
    await ui.admin.control.acting_for(ui.actor).clear_cooldown(deployment)
    await ui.audit("cooldown.clear", deployment)
    if "application/json" in ui.request.headers.get("accept", ""):
        return _json({"cleared": True})
    return ui.redirect("/ui/queues", ("ok", f"Cooldown of {deployment} ended."))


async def test_deployment(ui: Ui) -> Response:
    """One short request pinned to the deployment; status and latency for the button."""
    deployment = ui.request.path_params["deployment"]
    table = (await ui.admin.control.table()).table
    alias = next(
        (a for a, r in table.routes.items() if any(d.id == deployment for d in r.deployments)),
        None,
    )
    if alias is None:
        raise NotFound(f"no deployment `{deployment}`", param="deployment")
    payload = {
        "model": alias,
        "messages": [{"role": "user", "content": "Reply with the word: pong"}],
        "max_tokens": 5,
    }
    llm = ui.admin.llm
    env = llm.envelope(timeout=30).with_(pin=deployment)
    began = time.perf_counter()
    result: dict[str, Any] = {"deployment": deployment}
    try:
        await llm.request(subjects.CHAT, _ENCODE.encode(payload), env)
    except ApiError as exc:
        result.update(ok=False, status=exc.status, error=exc.message)
    else:
        result.update(ok=True, status=200)
    result["latency_ms"] = round((time.perf_counter() - began) * 1000, 1)
    await ui.audit("deployment.test", deployment, f"status {result['status']}", ok=result["ok"])
    if "application/json" in ui.request.headers.get("accept", ""):
        return _json(result)
    text = f"Test of {deployment}: {result['status']} in {result['latency_ms']} ms"
    if not result["ok"]:
        text += f" ({result['error']})"
    return ui.redirect("/ui/queues", ("ok" if result["ok"] else "error", text))


ROUTES: list[Route] = [
    ("/", "GET", overview_page),
    ("/queues", "GET", queues_page),
    ("/api/overview", "GET", overview_json),
    ("/api/stream", "GET", stream),
    ("/api/history", "GET", history),
    ("/deployments/{deployment}/cooldown/end", "POST", end_cooldown),
    ("/deployments/{deployment}/test", "POST", test_deployment),
]
