"""Routes of this server that are not part of the Lambda API: health and code downloads."""

from __future__ import annotations

import re
import time

from aiohttp import web

from faas.errors import ResourceNotFoundException
from faas.services import SERVICES

_SHA = re.compile(r"[0-9a-f]{64}")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def code_download(request: web.Request) -> web.StreamResponse:
    """Code.Location of GetFunction: the deployment package, as uploaded."""
    svc = request.app[SERVICES]
    digest = request.match_info["sha"]
    if not _SHA.fullmatch(digest) or not svc.code.has(digest):
        raise ResourceNotFoundException("The resource you requested does not exist.")
    return web.FileResponse(svc.code.zip_path(digest), headers={"Content-Type": "application/zip"})


async def async_stats(request: web.Request) -> web.Response:
    """For operators: queued asynchronous events per function, the oldest one's age, and dropped events."""
    svc = request.app[SERVICES]
    now = time.time()
    queues = await svc.async_events.depth()
    for q in queues:
        q["oldest_age_seconds"] = round(now - q.pop("oldest_enqueued_at"), 3)
    return web.json_response({"queues": queues, "dropped": await svc.async_events.dropped()})


def add_server_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/_faas/async", async_stats)
    app.router.add_get("/_faas/code/{sha}.zip", code_download)
