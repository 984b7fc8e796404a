"""One side of ``bench/pairs.py``: runs in a checkout's ``bench/`` folder, with that checkout's Python
and code (its ``_common.py``, its ``mesh``). Starts a mesh of ``NODES`` nodes (the null executor), says
``ready``, then for each line ``run SIZE N WINDOW`` sends N tasks of SIZE bytes WINDOW at a time and
prints one JSON line: the latencies (ms, the first task's left out: its client is new and holds no
ticket yet), tasks/s, whether all came back ok and how many of those ran on the leader's node.
``quit``, or the end of input, stops the mesh."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.getcwd())  # the checkout's bench/ folder: its _common and, through it, its mesh

from _common import Job, cluster, like_the_cli, run_jobs, tmpdir, wait_mesh


def main() -> None:
    like_the_cli()
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with cluster(tmpdir(), extra=["--slots", "1", "--bench-delay-ms", "0"]) as c:
        c.start(nodes)
        wait_mesh(c, nodes)
        port = c.nodes[0].port
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            size, n, window = int(cmd[1]), int(cmd[2]), int(cmd[3])
            payload = os.urandom(size)
            res, secs, client = run_jobs(port, [Job(payload, b"m") for _ in range(n)], window=window, keep_data=False)
            lat = [r.latency_ms for r in res[1:]]
            leader = client.leader.leader_id if client.leader is not None else ""
            on_leader = sum(r.node_id == leader for r in res[1:])  # one at a time: where the tickets sent them
            print(json.dumps({"lat": lat, "tps": n / secs, "ok": all(r.ok for r in res), "on_leader": on_leader}))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
