"""Readiness and metrics endpoints for a service that coordinates through etcd, ASGI style.

``app`` is a plain ASGI 3 application (no framework needed; run it under any ASGI server,
e.g. ``uvicorn health_app:app``). Its lifespan connects to etcd, opens a session, a
watched config view and a registration; on shutdown it closes them in reverse order.
``lifespan(state)`` is an async context manager of the shape FastAPI takes
(``FastAPI(lifespan=...)``), so the same code drops into a FastAPI app, where the
handlers below become ``@app.get("/readyz")`` functions.

* ``GET /healthz``: the process is up (liveness: never looks at etcd);
* ``GET /readyz``: ``client.health()``: 200 when every session is alive, every view is
  current and the registration is in place, else 503 with the problems (readiness);
* ``GET /metrics``: this process's etcd-recipes metrics in the Prometheus text format.

Run as a script, it starts the app, calls its own endpoints, revokes its session's lease
(as an etcd-side fault would) to show readiness turn 503, and shuts down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import etcd_recipes
from _common import connect

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class State:
    """What the handlers need; filled in by `lifespan`."""

    client: etcd_recipes.Client | None = None
    session: etcd_recipes.Session | None = None


@asynccontextmanager
async def lifespan(state: State) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:  # exits in reverse order of entering
        client = await stack.enter_async_context(connect())
        state.client = client
        state.session = await stack.enter_async_context(await client.session(ttl=5))
        await client.put("health-demo/config/greeting", "hello")
        await stack.enter_async_context(await client.config("health-demo/config/", prefix=True))
        await stack.enter_async_context(client.register("health-demo", "api-1", "127.0.0.1:8080", ttl=5))
        yield
        state.client = None


def readiness(state: State) -> tuple[int, dict[str, Any]]:
    if state.client is None:
        return 503, {"ready": False, "problems": ["starting or stopping"]}
    h = state.client.health()
    body = {
        "ready": h.healthy,
        "sessions_alive": h.sessions_alive,
        "views_current": h.views_current,
        "registrations": [c.state for c in h.components],
        "problems": h.problems,
    }
    return (200 if h.healthy else 503), body


def make_app(state: State) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            async with lifespan(state):
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/healthz":
            status, ctype, body = 200, "application/json", b'{"alive": true}'
        elif path == "/readyz":
            status, ready = readiness(state)
            ctype, body = "application/json", json.dumps(ready).encode()
        elif path == "/metrics":
            status, ctype, body = 200, "text/plain; version=0.0.4", etcd_recipes.metrics_text().encode()
        else:
            status, ctype, body = 404, "text/plain", b"not found"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype.encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


state = State()
app = make_app(state)


async def get(path: str) -> tuple[int, bytes]:
    """Call the app in-process, as an ASGI server would for `GET path`."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return int(sent[0]["status"]), bytes(sent[1]["body"])


async def main() -> None:
    events: asyncio.Queue[Message] = asyncio.Queue()
    replies: asyncio.Queue[Message] = asyncio.Queue()
    server_side = asyncio.ensure_future(app({"type": "lifespan"}, events.get, replies.put))
    await events.put({"type": "lifespan.startup"})
    print("lifespan:", (await replies.get())["type"], flush=True)

    status, body = await get("/healthz")
    print(f"GET /healthz -> {status}", flush=True)
    status, body = await get("/readyz")
    print(f"GET /readyz -> {status} {json.loads(body)}", flush=True)
    status, body = await get("/metrics")
    print(f"GET /metrics -> {status}, {len(body.splitlines())} lines", flush=True)

    # An etcd-side fault: the session's lease is revoked. The session says so at once.
    assert state.client is not None and state.session is not None
    await state.client.revoke_lease(state.session.lease_id)
    await state.session.lost()
    status, body = await get("/readyz")
    print(f"after the lease was revoked: GET /readyz -> {status} {json.loads(body)['problems']}", flush=True)
    lost = [line for line in etcd_recipes.metrics_text().splitlines() if line.startswith("etcd_recipes_session_losses_total")]
    print(f"metrics: {lost[0]}", flush=True)

    await events.put({"type": "lifespan.shutdown"})
    print("lifespan:", (await replies.get())["type"], flush=True)
    await server_side


if __name__ == "__main__":
    asyncio.run(main())
