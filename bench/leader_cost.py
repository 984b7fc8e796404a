"""The leader's own CPU per task, without sockets or processes: the scheduler wired to the tests'
fake sockets (``tests/test_scheduler.py``), two workers (this node's own, reached by a call, and
another), a task at a time on this node's worker, with a result.

- ``plain``: ``Submit`` -> placement pass -> the worker's ``Done`` (and, before the direct path,
  the relayed ``Result`` with its bytes).
- ``lone``: a lone task on the leader's own node (protocol v7): ``Direct(submit)`` redeems its
  ticket and plans and holds the next, the ``Result`` goes with that ticket as one bundle, then the
  ``Done``. Checkouts before v7 have no such path and print only ``plain``.
- ``lone_path``: of ``lone``, the part in the task's path, from its ``Direct`` to its ``Result`` sent
  (the ``Done`` is handled while the client reads the answer; since the seventeenth session the next
  ticket is planned there too, ahead).

Prints microseconds per task (the least of ``--repeat`` runs of ``--n`` tasks: the other processes on
a shared VM only ever add) and saves JSON with ``--out``. It measures the checkout it sits in: copy it
into an older one's ``bench/`` (as ``bench/trees.py`` does for ``overhead.py``) to compare.

    python bench/leader_cost.py [--n 5000] [--repeat 5] [--out leader-cost]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from typing import Any

from _common import save

from mesh import const
from mesh.cluster.scheduler import Scheduler
from mesh.wire import protocol
from tests import test_scheduler as ts

RELAY = "blobs" in inspect.signature(Scheduler._submit).parameters  # before the direct path (e50b7a4)
LONE = hasattr(protocol, "Direct") and "submit" in protocol.Direct.__dataclass_fields__  # protocol v7


def _ready(node: str) -> Any:
    """A worker's grant, in the fields this checkout's ``Ready`` has."""
    fields: dict[str, Any] = {"credits": 4, "slots": 1, "host": "h"}
    if "task_port" in protocol.Ready.__dataclass_fields__:
        fields["task_port"] = 1
    return protocol.Ready(node, **fields)


async def _leader(tickets: bool) -> Scheduler:
    leader, _, _ = ts._leader()
    if tickets:
        leader.ticket_ttl = const.TICKET_TTL
    leader.local_worker = lambda *a: None
    if hasattr(leader, "on_direct"):
        leader.on_direct = lambda *a: None
    await leader._on_back(b"n1", _ready("n1"), [], local=True)
    await leader._on_back(b"w2", _ready("w2"), [])
    return leader


async def plain(n: int, tag: str) -> float:
    leader = await _leader(tickets=False)
    front, back = leader.front, leader.back
    t0 = time.perf_counter()
    for i in range(n):
        tid = f"{tag}-{i}"
        if RELAY:
            await leader._submit(b"c", protocol.Submit(tid), [b"i", b"m"])  # type: ignore[arg-type]
        else:
            await leader._submit(b"c", protocol.Submit(tid, size=65536))
        node = leader.tasks[tid].worker
        assert node is not None
        done = protocol.Done(tid, True, node_id=node.decode(), model_ms=0.1)
        await leader._on_back(node, done, [b"out"] if RELAY else [], local=node == b"n1")
        front.sent.clear()  # type: ignore[attr-defined]
        back.sent.clear()  # type: ignore[attr-defined]
    return (time.perf_counter() - t0) / n * 1e6


async def lone(n: int, tag: str) -> float:
    return (await lone_parts(n, tag))[0]


async def lone_path(n: int, tag: str) -> float:
    """Of ``lone``, the part in the task's path: from its ``Direct`` to its ``Result`` sent (what the
    leader does after, handling the ``Done``, overlaps the client reading the answer)."""
    return (await lone_parts(n, tag))[1]


async def lone_parts(n: int, tag: str) -> tuple[float, float]:
    leader = await _leader(tickets=True)
    front = leader.front
    await leader._submit(b"c", protocol.Submit(f"{tag}-first", size=65536))  # the plain way: its ticket comes
    first = protocol.Done(f"{tag}-first", True, node_id="n1", model_ms=0.1, size=65536)
    await leader._on_back(b"n1", first, [], local=True)
    ticket = next(m for _, m, _ in reversed(front.sent) if isinstance(m, protocol.Place) and m.ticket).ticket  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    path = 0.0
    for i in range(n):
        tid = f"{tag}-{i}"
        t1 = time.perf_counter()
        await leader._on_front(b"c", protocol.Direct(tid, ticket=ticket, submit=True, size=65536), [b"i", b"m"])
        await leader.answer(b"c", protocol.Result(tid, True, node_id="n1"), [b"out"])
        path += time.perf_counter() - t1
        offer = front.sent[-2][1]  # type: ignore[attr-defined]
        if not isinstance(offer, protocol.Place) or not offer.ticket:
            raise RuntimeError(f"task {i}: no ticket rode on the Result")
        done = protocol.Done(tid, True, node_id="n1", model_ms=0.1, ticket=ticket)
        await leader._on_back(b"n1", done, [], local=True)
        ticket = offer.ticket
        front.sent.clear()  # type: ignore[attr-defined]
        front.bundles.clear()  # type: ignore[attr-defined]
    if leader.direct != n:
        raise RuntimeError(f"{leader.direct} of {n} tasks came by their ticket")
    return (time.perf_counter() - t0) / n * 1e6, path / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    paths = {"plain": plain} | ({"lone": lone, "lone_path": lone_path} if LONE else {})
    out: dict[str, Any] = {}
    for name, path in paths.items():
        runs = [round(asyncio.run(path(args.n, f"{name}{r}")), 2) for r in range(args.repeat)]
        out[name] = {"us_per_task": min(runs), "runs": runs}
        print(f"{name:6s} {min(runs):7.1f} us a task (least of {args.repeat} x {args.n}; all {runs})")
    if args.out:
        save(args.out, {"n": args.n, "repeat": args.repeat, "relay": RELAY, "results": out})


if __name__ == "__main__":
    main()
