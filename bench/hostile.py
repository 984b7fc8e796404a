"""The long hostile-peer run: a 3-node mesh (real `lamamesh join` processes, the sleep executor) runs
a batch of tasks through each attack by a peer that speaks the protocol and lies, then the attack
stops and the mesh must heal: one leader, every node registered, tasks answered.

    python bench/hostile.py [--rounds 2] [--tasks 60]

Attacks (the findings of the hostile-peer probe, issue 14): a heartbeat with term 2**31; a Ready
naming a real worker from another connection with 65,536 credits; a fake worker that gossips, takes
tasks and never answers (the leader's deadlines must re-place them); 1,100 fake members; 50 peer
lists of 1,024 closed endpoints; 1,100 idle TCP connections; a client that never reads its results;
forged tickets (tasks sent straight to workers under tickets nobody gave). Prints, per attack, tasks answered /
failed / lost and seconds to heal, and saves JSON under bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from _common import save, tmpdir

from mesh import const
from mesh.errors import MeshError
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Cancel, Direct, Submit
from mesh.wire.transport import Context
from tests.cluster import Cluster, cluster, png, status, wait_until
from tests.hostile import HostilePeer, idle_connections, unread_results

IMG = png(np.full((48, 64, 3), 120, np.uint8))
MASK = png(np.full((48, 64), 255, np.uint8))


def run_tasks(port: int, n: int, timeout: float) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            try:
                await client.connect()
            except MeshError as exc:  # the mesh did not answer at all: every task counts as failed
                return {"sent": n, "ok": 0, "failed": n, "lost": 0, "errors": [f"{exc.code}: {exc}"]}
            got = await client.run([Job(IMG, MASK) for _ in range(n)], timeout=timeout)
            return {
                "sent": n,
                "ok": sum(r.ok for r in got),
                "failed": sum(not r.ok for r in got),
                "lost": n - len(got),
                "errors": sorted({f"{r.error_code}: {r.error}" for r in got if not r.ok}),
            }
        finally:
            client.close()
            ctx.close()

    return asyncio.run(go())


def formed(c: Cluster, n: int) -> dict[str, Any]:
    s = status(c.nodes[0].port)
    ready = [x for x in s.get("nodes", []) if x["alive"] and x.get("ready")]
    return s if s.get("leader") and len(ready) == n else {}


Attack = Callable[[Cluster, HostilePeer, dict[str, Any], float], Coroutine[Any, Any, None]]


async def term(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    for n in c.nodes:
        await hp.introduce(n.port, "evil-term")
    await hp.gossip([hp.heartbeat("evil-term", term=2**31)], secs)


async def forged_ready(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    leader = next(x for x in s["nodes"] if x["id"] == s["leader"])
    victim = next(x for x in s["nodes"] if x["id"] != s["leader"])
    fields = {"node_id": victim["id"], "credits": 65536, "slots": 1024, "host": "127.0.0.1", "task_port": 1}
    await hp.ready(leader["port"] + 1, b"forger", **fields)
    await asyncio.sleep(secs)


async def greedy_worker(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    """A member that gossips, registers as a worker, takes tasks and never answers."""
    leader = next(x for x in s["nodes"] if x["id"] == s["leader"])
    sink = hp.ctx.router()  # where clients send it the bytes: read by nobody
    port = sink.bind("127.0.0.1", 0)
    hb = hp.heartbeat("evil-worker", task_port=port, term=s["term"], leader=s["leader"])
    for n in c.nodes:
        await hp.introduce(n.port, "evil-worker")
    beats = asyncio.create_task(hp.gossip([hb], secs + const.TASK_DEADLINE_MIN + 15))
    await asyncio.sleep(1.0)
    fields = {"node_id": "evil-worker", "credits": 65536, "slots": 1, "host": "127.0.0.1", "task_port": port}
    await hp.ready(leader["port"] + 1, b"evil-worker", **fields)
    await asyncio.sleep(secs)
    await beats  # it stays a live member through the batch: only the deadlines free its tasks
    sink.close()


async def fake_members(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    for n in c.nodes:
        await hp.introduce(n.port, "fake-0000")
    await hp.gossip([hp.heartbeat(f"fake-{i:04d}", task_port=2000 + i) for i in range(1100)], secs, every=0.3)


async def peer_lists(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    for n in c.nodes:
        await hp.introduce(n.port, "lister-00")
    beats = [
        hp.heartbeat(
            f"lister-{k:02d}", task_port=3000 + k, peers=[f"ghost{k}-{i}@127.0.0.1:{40000 + i}" for i in range(1024)]
        )
        for k in range(50)
    ]
    await hp.gossip(beats, secs, every=0.3)


async def idle_flood(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    with idle_connections(c.nodes[0].port, 1100):
        await asyncio.sleep(secs)


async def unread(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    await asyncio.to_thread(unread_results, c.nodes[0].port, 1000, 64 * 1024, lambda: None)


async def forged_tickets(c: Cluster, hp: HostilePeer, s: dict[str, Any], secs: float) -> None:
    """A client with no ticket: 64 KiB Directs naming made-up tickets at every node, Submits naming
    them at the leader (its tasks' bytes never come; Cancel drops them)."""
    leader = next(x for x in s["nodes"] if x["id"] == s["leader"])
    blob = bytes(65536)
    for n in c.nodes:
        d = hp.dealer()
        d.connect("127.0.0.1", n.port)
        for i in range(300):
            await d.send(Direct(f"forged-{n.port}-{i}", ticket=f"{i:016x}"), [blob, b"m"])
    lead = hp.dealer()
    lead.connect("127.0.0.1", leader["port"])
    for i in range(20):
        await lead.send(Submit(f"sub-{i}", ticket=f"{i:016x}", size=1))
    for i in range(20):  # a lone task's Submit and bytes in one message, naming a made-up ticket
        await lead.send(Direct(f"lone-{i}", ticket=f"{i + 500:016x}", submit=True, size=1), [blob, b"m"])
    await asyncio.sleep(secs)
    await lead.send(Cancel())


ATTACKS: dict[str, tuple[Attack, float]] = {  # the attack, and how long it runs before the batch starts
    "term 2**31 heartbeat": (term, 0.5),
    "forged Ready (another node's id, 65,536 credits)": (forged_ready, 0.5),
    "fake worker that takes tasks and never answers": (greedy_worker, 2.0),
    "1,100 fake members": (fake_members, 0.5),
    "50 peer lists of 1,024 closed endpoints": (peer_lists, 0.5),
    "1,100 idle TCP connections": (idle_flood, 0.5),
    "a client that never reads its results (1,000 x 64 KiB)": (unread, 0.5),
    "forged tickets (900 Directs of 64 KiB, 20 Submits, 20 lone Directs)": (forged_tickets, 0.5),
}


def one(c: Cluster, name: str, attack: Attack, tasks: int, secs: float, lead: float = 0.5) -> dict[str, Any]:
    s = wait_until(lambda: formed(c, 3), 60, "the mesh before the attack")
    hp = HostilePeer(c.name)
    counts: dict[str, Any] = {}

    def batch() -> None:
        b0 = time.monotonic()
        counts.update(run_tasks(c.nodes[-1].port, tasks, timeout=const.TASK_DEADLINE_MIN * 4 + 60))
        counts["batch_seconds"] = round(time.monotonic() - b0, 1)

    t0 = time.monotonic()
    worker = threading.Thread(target=batch)

    async def attack_with_a_batch() -> None:
        task = asyncio.create_task(attack(c, hp, s, secs))
        await asyncio.sleep(lead)  # the attack is under way when the batch starts
        worker.start()
        await task

    try:
        asyncio.run(attack_with_a_batch())
    finally:
        hp.close()
        if worker.ident is not None:
            worker.join()
    stopped = time.monotonic()
    wait_until(lambda: formed(c, 3), 120, f"the mesh to heal after {name}")
    after = run_tasks(c.nodes[0].port, 10, timeout=60)
    healed = time.monotonic() - stopped
    alive = all(n.alive for n in c.nodes)
    return {
        "attack": name,
        **counts,
        "attack_seconds": round(stopped - t0, 1),
        "healed_s": round(healed, 1),
        "after_ok": after["ok"],
        "nodes_alive": alive,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=60, help="tasks in the batch run through each attack")
    ap.add_argument("--seconds", type=float, default=4.0, help="how long each attack goes on")
    args = ap.parse_args()
    root = tmpdir()
    rows: list[dict[str, Any]] = []
    try:
        with cluster(root, extra=("--bench-delay-ms", "20", "--slots", "1")) as c:
            c.start(3)
            wait_until(lambda: formed(c, 3), 90, "three nodes")
            for r in range(args.rounds):
                for name, (attack, lead) in ATTACKS.items():
                    row = {"round": r + 1, **one(c, name, attack, args.tasks, args.seconds, lead)}
                    rows.append(row)
                    print(
                        f"round {row['round']}  {name:50s} tasks ok {row.get('ok')}/{row.get('sent')}, "
                        f"failed {row.get('failed')}, lost {row.get('lost')}; batch {row.get('batch_seconds')} s; "
                        f"healed in {row['healed_s']} s (10/10 after: {row['after_ok'] == 10}); "
                        f"nodes up: {row['nodes_alive']}" + (f"; errors {row['errors']}" if row.get("errors") else ""),
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lost = sum(r.get("lost", 0) for r in rows)
    failed = sum(r.get("failed", 0) for r in rows)
    healed = all(r["after_ok"] == 10 and r["nodes_alive"] for r in rows)
    print(f"{len(rows)} attacks: tasks lost {lost}, failed {failed}; the mesh healed after every one: {healed}")
    save(
        "hostile",
        {
            "rounds": args.rounds,
            "tasks": args.tasks,
            "rows": rows,
            "lost": lost,
            "failed": failed,
            "healed_every_time": healed,
        },
    )


if __name__ == "__main__":
    main()
