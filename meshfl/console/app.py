"""The console's web layer: one page, a JSON snapshot, a server-sent-events stream, and the probes.

Starlette serves ``/`` (a single HTML page with plain JavaScript: no front-end build), ``/api/state``
(the folded view as JSON), ``/api/stream`` (``text/event-stream``: a snapshot whenever the bus moved,
at most every ``push_interval`` seconds), and ``/metrics``, ``/healthz``, ``/readyz`` like every daemon.
Everything is read-only: no route writes to the bus.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from meshfl.console.reader import BusFollower
from meshfl.metrics import METRICS


def _page() -> str:
    return resources.files("meshfl.console").joinpath("page.html").read_text(encoding="utf-8")


def console_app(follower: BusFollower, *, push_interval: float = 0.5) -> Starlette:
    """The ASGI app over a started ``BusFollower``."""
    page = _page()

    async def index(_: Request) -> Response:
        return HTMLResponse(page)

    async def state(_: Request) -> Response:
        return JSONResponse(follower.snapshot())

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            METRICS.console_clients.inc()
            try:
                sent = -1
                while not await request.is_disconnected():
                    if follower.changes != sent:
                        sent = follower.changes
                        yield f"data: {json.dumps(follower.snapshot())}\n\n"
                    else:
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(push_interval)
            finally:
                METRICS.console_clients.dec()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if follower.failure is not None:
            return PlainTextResponse(f"{follower.failure}\n", status_code=503)
        if not follower.caught_up.is_set():
            return PlainTextResponse("reading the log\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/stream", stream),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


__all__ = ["console_app"]
