"""The floor under bench/lan.py's figures: the same traffic with no mesh at all. Plain asyncio TCP,
one persistent connection from each client to each server, length-prefixed messages; a server
sleeps ``--service-ms`` per request (``--slots`` at once) and echoes the payload back; a client keeps
``--window`` requests out, each sent to the server with the fewest outstanding. No leader, no
placement, no ZeroMQ, no msgpack: what the shaped links themselves allow this pattern.

    python bench/_rawlan.py server --port 6000 --service-ms 100 --slots 1
    python bench/_rawlan.py client --servers 10.0.0.1:6000,... --tasks 100 --payload 1048576 --out f.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from pathlib import Path

from _lanclient import _sample_link, _tcp_counters, start_together

HEAD = struct.Struct("!Q")


async def serve(args: argparse.Namespace) -> None:
    slots = asyncio.Semaphore(args.slots)

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()  # answers go back whole, one at a time, on this connection

        async def answer(data: bytes) -> None:
            async with slots:
                await asyncio.sleep(args.service_ms / 1000)
            async with lock:
                writer.write(HEAD.pack(len(data)) + data)
                await writer.drain()

        tasks = set()
        try:
            while True:
                (n,) = HEAD.unpack(await reader.readexactly(HEAD.size))
                t = asyncio.create_task(answer(await reader.readexactly(n)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(one, args.host, args.port)
    async with server:
        await server.serve_forever()


async def client(args: argparse.Namespace) -> None:
    addrs = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in args.servers.split(","))]
    conns = [await asyncio.open_connection(h, p) for h, p in addrs]
    out = [0] * len(conns)  # requests outstanding at each server
    payload = bytes(i % 251 for i in range(args.payload))
    done = asyncio.Event()
    answered = 0
    room = asyncio.Semaphore(args.window)

    async def read(i: int) -> None:
        nonlocal answered
        reader = conns[i][0]
        while answered < args.tasks:
            (n,) = HEAD.unpack(await reader.readexactly(HEAD.size))
            await reader.readexactly(n)
            out[i] -= 1
            answered += 1
            room.release()
            if answered >= args.tasks:
                done.set()

    await start_together(Path(args.barrier), Path(args.out).stem)
    started = time.time()
    link: list[tuple[float, int, int]] = []
    sampler = asyncio.create_task(_sample_link(link, started))
    tcp0 = _tcp_counters()
    readers = [asyncio.create_task(read(i)) for i in range(len(conns))]
    for _ in range(args.tasks):
        await room.acquire()
        i = min(range(len(conns)), key=lambda k: out[k])
        out[i] += 1
        w = conns[i][1]
        w.write(HEAD.pack(len(payload)) + payload)
        await w.drain()
    await done.wait()
    ended = time.time()
    sampler.cancel()
    for r in readers:
        r.cancel()
    for _, w in conns:
        w.close()
    tcp = {k: v - tcp0.get(k, 0) for k, v in _tcp_counters().items()}
    result = {"started": started, "ended": ended, "ok": answered, "failed": 0, "duplicates": 0,
              "missing": args.tasks - answered, "resent": 0, "by_node": {}, "link": link, "tcp": tcp}  # fmt: skip
    Path(args.out).write_text(json.dumps(result))  # noqa: ASYNC240 (once, at the end)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=6000)
    s.add_argument("--service-ms", type=float, default=100.0)
    s.add_argument("--slots", type=int, default=1)
    c = sub.add_parser("client")
    c.add_argument("--servers", required=True)
    c.add_argument("--tasks", type=int, default=100)
    c.add_argument("--payload", type=int, default=1 << 20)
    c.add_argument("--window", type=int, default=64)
    c.add_argument("--barrier", default="", help="folder shared with bench/lan.py to start together (none: now)")
    c.add_argument("--out", required=True)
    args = ap.parse_args()
    asyncio.run(serve(args) if args.mode == "server" else client(args))


if __name__ == "__main__":
    main()
