"""One client host of bench/lan.py: submits --tasks null tasks of --payload bytes through the mesh,
starting at --start-at (wall clock, so every client host starts together), and writes its figures."""

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

from mesh.surface.client import Client, Job, JobResult  # noqa: E402
from mesh.wire.transport import Context  # noqa: E402


async def main(args: argparse.Namespace) -> None:
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

    def done(r: JobResult) -> None:
        nonlocal failed
        seen[r.job.task_id] = seen.get(r.job.task_id, 0) + 1
        if r.ok and r.data == payload:
            by_node[r.node_id] = by_node.get(r.node_id, 0) + 1
        else:
            failed += 1
            print(f"task {r.job.label}: {r.error_code} {r.error}", file=sys.stderr)
        if len(seen) % 5 == 0:
            progress.write_text(str(len(seen)))

    await asyncio.sleep(max(0.0, args.start_at - time.time()))
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
                "by_node": by_node,
                "link": link,
                "tcp": {k: v - tcp0.get(k, 0) for k, v in _tcp_counters().items()},
            }
        )
    )


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
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    asyncio.run(main(ap.parse_args()))
