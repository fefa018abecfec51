"""Reading back one thing the management API writes by name: ``GET /providers/{name}`` (as
``PUT`` takes it) and ``GET /secrets/{name}`` (the metadata, never the value, as ``switchyard
secrets show NAME``). Both were a 405: a script that wrote one provider or secret read back
every one to check it."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.context import AdminContext
from switchyard.admin.path_names import secret_name
from switchyard.errors import NotFound
from switchyard.runtime.http import JSON

_ENCODE = msgspec.json.Encoder()


async def get_provider(request: Request, c: AdminContext) -> Response:
    name = request.path_params["name"]
    provider = (await c.control.table()).table.providers.get(name)
    if provider is None:
        raise NotFound(f"no provider `{name}`", param="name")
    return Response(_ENCODE.encode(provider), media_type=JSON)


async def get_secret(request: Request, c: AdminContext) -> Response:
    info = await c.secrets.info(secret_name(request.path_params["name"]))
    return Response(_ENCODE.encode(info), media_type=JSON)


ENDPOINTS = [
    ("/providers/{name}", "GET", "One provider, as PUT takes it", get_provider),
    (
        "/secrets/{name}",
        "GET",
        "One stored provider key's metadata (never its value)",
        get_secret,
    ),
]
