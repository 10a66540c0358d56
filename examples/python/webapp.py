"""The recipes inside a web app's startup/shutdown lifespan, ASGI style.

``lifespan(app)`` is an async context manager of the shape FastAPI and Starlette take
(``FastAPI(lifespan=lifespan)``). On startup it connects to etcd, opens a watched
config view, registers this instance for discovery, opens a live view of its peers
and campaigns for leadership in the background (only the leader runs the periodic
job). On shutdown it undoes all of that in reverse order: the job stops, leadership
is resigned, the instance is deregistered, the views close, the client closes.

To stay free of third-party packages the HTTP server is a tiny ``asyncio.start_server``
one. Endpoints:

* ``GET /config``: the current settings, read from the local view (no network);
* ``GET /peers``: the instances of this service, from the discovery view;
* ``POST /report``: a job that must not run twice at once, under a distributed lock.

    python webapp.py                 # start, call its own endpoints, shut down
    python webapp.py --serve 8080    # serve on 127.0.0.1:8080 until Ctrl-C / SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import etcd_recipes
from _common import connect

SERVICE = "demo-web"
APP = "demo-web-app"  # keys of the app itself (not under the service's registry prefix)


@dataclass
class App:
    """What the request handlers need; filled in by `lifespan`."""

    instance_id: str
    addr: str
    client: etcd_recipes.Client | None = None
    config: etcd_recipes.ConfigView | None = None
    peers: etcd_recipes.ServiceView | None = None
    is_leader: bool = False
    leader_ticks: int = 0
    background: list[asyncio.Task[None]] = field(default_factory=list)


async def leader_job(app: App, client: etcd_recipes.Client) -> None:
    """Campaign forever; while leader, run the periodic job (here: a heartbeat key)."""
    election = client.election(f"{APP}/leader", ttl=5)
    while True:
        async with election.campaign(app.instance_id) as leadership:
            app.is_leader = True
            print(f"{app.instance_id} is the leader", flush=True)
            lost = asyncio.ensure_future(leadership.lost())
            try:
                while not lost.done():
                    # A guarded write: refused by etcd once we are no longer the leader.
                    await leadership.put(f"{APP}/leader-heartbeat", str(app.leader_ticks))
                    app.leader_ticks += 1
                    await asyncio.wait([lost], timeout=0.2)
            finally:
                app.is_leader = False
                lost.cancel()


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:  # exits in reverse order of entering
        client = await stack.enter_async_context(connect())
        app.client = client
        if await client.get(f"{APP}/config/greeting") is None:
            await client.put(f"{APP}/config/greeting", "hello")
        app.config = await stack.enter_async_context(await client.config(f"{APP}/config/", prefix=True))
        await stack.enter_async_context(
            client.register(SERVICE, app.instance_id, app.addr, metadata={"pid": os.getpid()}, ttl=10)
        )
        app.peers = await stack.enter_async_context(await client.discover(SERVICE))
        job = asyncio.ensure_future(leader_job(app, client))
        app.background.append(job)

        async def stop_job() -> None:
            job.cancel()  # cancelling inside `async with campaign` resigns
            with suppress(asyncio.CancelledError):
                await job

        stack.push_async_callback(stop_job)
        print(f"startup complete: {app.instance_id} registered at {app.addr}", flush=True)
        yield
        print("shutting down", flush=True)
    print("shutdown complete", flush=True)


async def handle(app: App, method: str, path: str) -> tuple[int, Any]:
    assert app.client is not None and app.config is not None and app.peers is not None
    if method == "GET" and path == "/config":
        prefix = f"{APP}/config/"
        return 200, {k[len(prefix):]: app.config.get_string(k) for k in app.config.keys()}
    if method == "GET" and path == "/peers":
        return 200, {"peers": [i.id for i in app.peers.instances()], "leader": app.is_leader}
    if method == "POST" and path == "/report":
        try:
            async with app.client.lock(f"{APP}/report", ttl=10, timeout=5) as guard:
                n = int(await app.client.get(f"{APP}/reports") or b"0") + 1
                await guard.put(f"{APP}/reports", str(n))  # refused if the lock was lost
                return 200, {"report": n, "fencing_token": guard.fencing_token}
        except etcd_recipes.LockTimeoutError:
            return 503, {"error": "another report is running"}
    return 404, {"error": f"no route {method} {path}"}


async def serve_connection(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # headers: not needed here
        if len(request) < 2:
            status, body = 400, {"error": "bad request"}
        else:
            try:
                status, body = await handle(app, request[0], request[1])
            except etcd_recipes.EtcdRecipesError as e:
                status, body = 503, {"error": str(e), "code": e.code}
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
    finally:
        writer.close()


async def http(port: int, method: str, path: str) -> tuple[int, Any]:
    """A minimal HTTP client, for the self-test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def main(serve_port: int | None) -> None:
    server = await asyncio.start_server(lambda r, w: serve_connection(app, r, w), "127.0.0.1", serve_port or 0)
    port = server.sockets[0].getsockname()[1]
    app = App(instance_id=f"web-{os.getpid()}", addr=f"127.0.0.1:{port}")
    async with lifespan(app), server:
        if serve_port is not None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            print(f"serving on http://127.0.0.1:{port} (Ctrl-C to stop)", flush=True)
            await stop.wait()
            return
        # Self-test: call our own endpoints.
        print("GET /config ->", *await http(port, "GET", "/config"), flush=True)
        reports = await asyncio.gather(*(http(port, "POST", "/report") for _ in range(3)))
        for status, body in sorted(reports, key=lambda r: str(r[1])):
            print("POST /report ->", status, body, flush=True)
        # The campaign runs in the background: wait until the election has a leader and,
        # if that is this instance, until its job has taken over (a generous bound: it
        # normally takes milliseconds).
        assert app.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not app.is_leader and loop.time() < deadline:
            leader = await app.client.leader(f"{APP}/leader")
            if leader is not None and leader.value != app.instance_id.encode():
                break  # another instance leads
            await asyncio.sleep(0.05)
        print("GET /peers ->", *await http(port, "GET", "/peers"), flush=True)
        print("GET /nope ->", *await http(port, "GET", "/nope"), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve on this port until signalled")
    asyncio.run(main(parser.parse_args().serve))
