"""One client host of bench/lan.py: submits --tasks null tasks of --payload bytes through the mesh,
all client hosts starting at the same instant (``--barrier``: each says it is connected, bench/lan.py
then names the start time), and writes its figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mesh.malloc import keep_freed_memory  # noqa: E402
from mesh.surface.client import Client, Job, JobResult  # noqa: E402
from mesh.wire.transport import Context  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    keep_freed_memory()  # as the `lamamesh` command does for itself (mesh/malloc.py)
    # failovers and resubmissions, one line each, on this client host's stderr
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s client{args.seed} %(message)s")
    host, _, port = args.peer.rpartition(":")
    client = Client(Context(), [(host, int(port))])
    await client.connect()
    payload = bytes((args.seed * 7 + i) % 251 for i in range(args.payload))
    jobs = [Job(payload, b"m", label=str(i)) for i in range(args.tasks)]
    seen: dict[str, int] = {}
    by_node: dict[str, int] = {}
    failed = 0
    progress = Path(args.out + ".progress")
    answered: list[tuple[float, str]] = []  # (s since start, node) per answer: the timeline of results

    def done(r: JobResult) -> None:
        nonlocal failed
        seen[r.job.task_id] = seen.get(r.job.task_id, 0) + 1
        answered.append((round(time.time() - started, 4), r.node_id))
        if r.ok and r.data == payload:
            by_node[r.node_id] = by_node.get(r.node_id, 0) + 1
        else:
            failed += 1
            print(f"task {r.job.label}: {r.error_code} {r.error}", file=sys.stderr)
        if len(seen) % 5 == 0:
            progress.write_text(str(len(seen)))

    await start_together(Path(args.barrier), str(args.seed))
    started = time.time()
    link: list[tuple[float, int, int]] = []  # (s since start, bytes sent, bytes received) on this host's eth0
    sampler = asyncio.create_task(_sample_link(link, started))
    tcp0 = _tcp_counters()
    await client.run(jobs, done, window=args.window, keep=False)
    ended = time.time()
    sampler.cancel()
    client.close()
    Path(args.out).write_text(  # noqa: ASYNC240 (once, at the end)
        json.dumps(
            {
                "started": started,
                "ended": ended,
                "ok": sum(by_node.values()),
                "failed": failed,
                "duplicates": sum(n - 1 for n in seen.values()),
                "missing": args.tasks - len(seen),
                "resent": getattr(client, "resent", 0),
                "direct": client.direct,
                "by_node": by_node,
                "link": link,
                "answered": answered,
                "tcp": {k: v - tcp0.get(k, 0) for k, v in _tcp_counters().items()},
            }
        )
    )


async def start_together(barrier: Path, me: str, timeout: float = 120.0) -> None:
    """Say this client is connected (``barrier/ready-ME``), wait for ``barrier/go`` (written by
    bench/lan.py once every client is ready) and sleep until the wall-clock instant it holds. A fixed
    start time was not enough: on 2 busy cores one client's imports and connect took 3 s, and the time
    it was missing counted against the mesh."""
    if not barrier.name:
        return
    (barrier / f"ready-{me}").write_text("")
    go = barrier / "go"
    deadline = time.monotonic() + timeout
    while not go.exists() or not go.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"no start signal in {barrier} within {timeout:g} s")
        await asyncio.sleep(0.01)
    await asyncio.sleep(max(0.0, float(go.read_text()) - time.time()))


def release(barrier: Path, clients: int, timeout: float = 120.0, lead: float = 0.3) -> None:
    """bench/lan.py's side: once ``clients`` clients are ready, name a start ``lead`` s ahead."""
    deadline = time.monotonic() + timeout
    while len(list(barrier.glob("ready-*"))) < clients:
        if time.monotonic() > deadline:
            ready = len(list(barrier.glob("ready-*")))
            raise SystemExit(f"only {ready} of {clients} clients connected in {timeout:g} s")
        time.sleep(0.01)
    tmp = barrier / "go.tmp"
    tmp.write_text(repr(time.time() + lead))
    tmp.rename(barrier / "go")


def _tcp_counters() -> dict[str, int]:
    """This namespace's TCP segments sent and retransmitted, and retransmission timeouts."""
    got: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = Path(path).read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            names, values = head.split()[1:], vals.split()[1:]
            for k, v in zip(names, values, strict=False):
                if k in ("OutSegs", "RetransSegs", "TCPTimeouts", "TCPLostRetransmit", "TCPFastRetrans"):
                    got[k] = int(v)
    return got


async def _sample_link(out: list[tuple[float, int, int]], t0: float, every: float = 0.1) -> None:
    """This host's eth0 counters every ``every`` s (the namespace's own /sys): how busy its link was."""
    stats = "/sys/class/net/eth0/statistics/"
    if not os.path.exists(stats):  # noqa: ASYNC240 (sysfs: a kernel counter, no disk behind it)
        return
    while True:
        with open(stats + "tx_bytes") as tx, open(stats + "rx_bytes") as rx:  # noqa: ASYNC230 (sysfs, as above)
            out.append((round(time.time() - t0, 3), int(tx.read()), int(rx.read())))
        await asyncio.sleep(every)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--payload", type=int, default=1 << 20)
    ap.add_argument("--barrier", default="", help="folder shared with bench/lan.py to start together (none: now)")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    asyncio.run(main(ap.parse_args()))
