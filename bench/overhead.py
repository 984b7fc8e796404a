"""Mesh overhead against the alternatives, in one run on one machine.

A null task (its "model" returns the input at once) goes client -> scheduler -> a worker
process -> back, on 127.0.0.1, one at a time (latency: p50/p99 over --n round trips) and
with 64 in flight (throughput, tasks/s), for payloads of 64 KiB, 1 MiB and 8 MiB:

- lamamesh: two `lamamesh join` processes (a leader that also works, and a worker) with
  the BENCHMARK-ONLY executor `--bench-delay-ms 0`; the Python `Client` submits.
- bare relay: pyzmq client DEALER -> ROUTER/ROUTER broker process -> 2 worker processes
  (no membership, no placement, no retries): the floor Python reaches here.
- Dask distributed: `LocalCluster(n_workers=2, processes=True)`, `client.submit(echo, payload)`.
- RQ + Redis: Debian's `redis-server` (started and stopped here), 2 `rq worker` processes
  (SimpleWorker: no fork per job, RQ's fastest), `queue.enqueue(echo, payload)` and
  `job.latest_result(timeout=...)`.

    pip install 'dask[distributed]' rq redis; apt install redis-server
    python bench/overhead.py [--n 300] [--repeat 3] [--sizes 65536,1048576,8388608]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from _common import ROOT, Job, cluster, like_the_cli, pct, run_jobs, save, tmpdir, wait_mesh

from mesh.surface.demo import free_port_block
from tests.cluster import wait_until

BENCH = Path(__file__).resolve().parent


def summary(lat_ms: list[float], tput: float) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(lat_ms), 3),
        "p99_ms": round(pct(lat_ms, 0.99), 3),
        "tasks_per_s": round(tput, 1),
    }


# ---- lamamesh ------------------------------------------------------------------------------


def _cpu_s(p: psutil.Process, children: bool = True) -> float:
    """CPU seconds (user + system) of a process and, with ``children``, its live children (a node's
    slot processes; not for this process: the nodes are its children)."""
    t = p.cpu_times()
    total = t.user + t.system
    for child in p.children(recursive=True) if children else ():
        with contextlib.suppress(psutil.Error):
            ct = child.cpu_times()
            total += ct.user + ct.system
    return total


def bench_lamamesh(sizes: list[int], n: int, inflight: int, nodes: int = 2) -> dict[int, dict[str, float]]:
    out = {}
    with cluster(tmpdir(), extra=["--slots", "1", "--bench-delay-ms", "0"]) as c:
        c.start(nodes)
        wait_mesh(c, nodes)
        port = c.nodes[0].port
        for size in sizes:
            payload = os.urandom(size)
            run_jobs(port, [Job(payload, b"m") for _ in range(20)], window=1)  # warm-up
            procs = [psutil.Process(nd.proc.pid) for nd in c.nodes]
            before = [_cpu_s(p) for p in procs], _cpu_s(psutil.Process(), children=False)
            res, _, one = run_jobs(port, [Job(payload, b"m") for _ in range(n)], window=1, keep_data=False)
            after = [_cpu_s(p) for p in procs], _cpu_s(psutil.Process(), children=False)
            # CPU a task one at a time (us, all processes): the work on the p50's path and beside it
            cpu_one = (sum(after[0]) - sum(before[0]) + after[1] - before[1]) / max(1, n) * 1e6
            lat = [r.latency_ms for r in res]
            leader = one.leader.leader_id if one.leader is not None else ""
            before = [_cpu_s(p) for p in procs], _cpu_s(psutil.Process(), children=False)
            res2, secs, _ = run_jobs(
                port, [Job(payload, b"m", priority="batch") for _ in range(n * 2)], window=inflight, keep_data=False
            )
            after = [_cpu_s(p) for p in procs], _cpu_s(psutil.Process(), children=False)
            bad = [(r.error_code, r.error) for r in res + res2 if not r.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} tasks failed at {size} bytes, e.g. {bad[0]}")
            # one at a time the p50 has two modes on 2 cores, by where the tickets are: the leader's own
            # node (two busy processes a task) or the other (three): each run says which it had
            out[size] = {
                **summary(lat, len(res2) / secs),
                "by_ticket": getattr(one, "direct", 0),  # 0 in checkouts before tickets
                "on_leader": sum(r.node_id == leader for r in res),
                # the leader lost or moved during the run (a skewed on_leader with a slow p50: the tasks
                # before went to the old leader's node, and the client submitted the lone ones again)
                "failovers": getattr(one, "failovers", 0),
                "resubmitted": getattr(one, "resubmitted", 0),
                # with 64 in flight placement spreads the tasks over both nodes (right on a LAN); on one
                # 2-core host the second node's process only competes for the same cores
                "inflight_on_leader": round(sum(r.node_id == leader for r in res2) / max(1, len(res2)), 3),
                # CPU time a task costs with 64 in flight (us, user + system, all threads): steadier than
                # tasks/s on a shared VM, whose wall-clock figures spread by 20-40% from run to run
                "cpu_us_nodes": round((sum(after[0]) - sum(before[0])) / max(1, len(res2)) * 1e6, 1),
                "cpu_us_client": round((after[1] - before[1]) / max(1, len(res2)) * 1e6, 1),
                "cpu_us_one": round(cpu_one, 1),
            }
    return out


# ---- bare relay ----------------------------------------------------------------------------


def _broker(front: int, back: int) -> None:
    import zmq

    ctx = zmq.Context()
    f, b = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    f.bind(f"tcp://127.0.0.1:{front}")
    b.bind(f"tcp://127.0.0.1:{back}")
    idle: list[bytes] = []
    waiting: list[list[zmq.Frame]] = []
    poller = zmq.Poller()
    poller.register(f, zmq.POLLIN)
    poller.register(b, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock is b:
                w, *rest = b.recv_multipart(copy=False)
                wid = w.bytes
                if rest and rest[0].bytes != b"ready":
                    f.send_multipart(rest, copy=False)  # [client, payload]
                idle.append(wid)
            else:
                waiting.append(f.recv_multipart(copy=False))  # [client, payload]
            while idle and waiting:
                b.send_multipart([idle.pop(0), *waiting.pop(0)], copy=False)


def _relay_worker(back: int, up: Any) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(f"tcp://127.0.0.1:{back}")
    s.send(b"ready")
    up.set()
    while True:
        client, payload = s.recv_multipart(copy=False)
        s.send_multipart([client, payload], copy=False)


def bench_relay(sizes: list[int], n: int, inflight: int) -> dict[int, dict[str, float]]:
    import zmq

    front = free_port_block(2)
    ctxmp = mp.get_context("spawn")
    procs = [ctxmp.Process(target=_broker, args=(front, front + 1), daemon=True)]
    ups = [ctxmp.Event() for _ in range(2)]
    procs += [ctxmp.Process(target=_relay_worker, args=(front + 1, up), daemon=True) for up in ups]
    for p in procs:
        p.start()
    # measure only once both workers run (as lamamesh's run waits for its mesh): a spawned
    # process still importing takes a core, and the first tasks would pay for it
    for up in ups:
        if not up.wait(60):
            raise RuntimeError("a relay worker did not start within 60 s")
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(f"tcp://127.0.0.1:{front}")
    out = {}
    try:
        for size in sizes:
            payload = os.urandom(size)
            lat = []
            for i in range(n + 20):
                t0 = time.perf_counter()
                s.send(payload, copy=False)
                s.recv(copy=False)
                if i >= 20:
                    lat.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            sent = got = 0
            while got < 2 * n:
                while sent < 2 * n and sent - got < inflight:
                    s.send(payload, copy=False)
                    sent += 1
                s.recv(copy=False)
                got += 1
            out[size] = summary(lat, 2 * n / (time.perf_counter() - t0))
    finally:
        s.close(0)
        ctx.destroy(0)
        for p in procs:
            p.kill()
            p.join(5)
    return out


# ---- Dask ------------------------------------------------------------------------------------


def bench_dask(sizes: list[int], n: int, inflight: int) -> dict[int, dict[str, float]]:
    from dask.distributed import Client, LocalCluster

    sys.path.insert(0, str(BENCH))
    from _nulltask import echo

    out = {}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        Client(lc) as client,
    ):
        for size in sizes:
            payload = os.urandom(size)
            lat = []
            for i in range(n + 20):
                t0 = time.perf_counter()
                client.submit(echo, payload, pure=False).result()
                if i >= 20:
                    lat.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            futs = []
            done = 0
            for _ in range(2 * n):
                futs.append(client.submit(echo, payload, pure=False))
                if len(futs) >= inflight:
                    futs.pop(0).result()
                    done += 1
            for f in futs:
                f.result()
            out[size] = summary(lat, 2 * n / (time.perf_counter() - t0))
    return out


# ---- RQ + Redis --------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt install redis-server)")
    port = free_port_block(1)
    p = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        r = redis.Redis(port=port)
        wait_until(lambda: _ping(r), 20, "redis-server")
        yield port
    finally:
        p.terminate()
        p.wait(10)


def _ping(r: object) -> bool:
    try:
        return bool(r.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


def bench_rq(sizes: list[int], n: int, inflight: int) -> dict[int, dict[str, float]]:
    import redis
    from rq import Queue

    sys.path.insert(0, str(BENCH))
    from _nulltask import echo

    out = {}
    with redis_server() as port:
        conn = redis.Redis(port=port)
        url = f"redis://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{ROOT}"}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rq.cli",
                    "worker",
                    "--url",
                    url,
                    "--worker-class",
                    "rq.worker.SimpleWorker",
                    "-q",
                    "bench",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            for _ in range(2)
        ]
        try:
            q = Queue("bench", connection=conn)
            for size in sizes:
                payload = os.urandom(size)
                lat = []
                for i in range(n + 20):
                    t0 = time.perf_counter()
                    job = q.enqueue(echo, payload)
                    res = job.latest_result(timeout=30)
                    assert res is not None and res.type == res.Type.SUCCESSFUL
                    if i >= 20:
                        lat.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                jobs = []
                for _ in range(2 * n):
                    jobs.append(q.enqueue(echo, payload))
                    if len(jobs) >= inflight:
                        jobs.pop(0).latest_result(timeout=60)
                for j in jobs:
                    j.latest_result(timeout=60)
                out[size] = summary(lat, 2 * n / (time.perf_counter() - t0))
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--sizes", default="65536,1048576,8388608")
    ap.add_argument(
        "--lamamesh-nodes", type=int, default=2, help="nodes of the lamamesh mesh (2: a leader and a worker)"
    )
    ap.add_argument("--only", default="", help="measure only this system and merge it into the saved JSON")
    ap.add_argument("--out", default="overhead", help="name of the JSON under bench/results")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every system, one after another; each figure is the median over the rounds "
        "(a 2-core box varies by 15-50%% from run to run)",
    )
    args = ap.parse_args()
    like_the_cli()  # every system's client runs in this process, as `lamamesh submit` would
    sizes = [int(x) for x in args.sizes.split(",")]
    systems: dict[str, Callable[[list[int], int, int], dict[int, dict[str, float]]]] = {
        "lamamesh": functools.partial(bench_lamamesh, nodes=args.lamamesh_nodes),
        "bare pyzmq relay": bench_relay,
        "Dask distributed": bench_dask,
        "RQ + Redis": bench_rq,
    }
    results: dict[str, dict[int, dict[str, float]]] = {}
    saved = ROOT / "bench" / "results" / f"{args.out}.json"
    if args.only and saved.exists():
        import json

        old = json.loads(saved.read_text())["results"]
        results = {k: {int(s): v for s, v in per.items()} for k, per in old.items()}
    rounds: dict[str, list[dict[int, dict[str, float]]]] = {}
    for _ in range(max(1, args.repeat)):  # interleaved: a slow minute on the box hits every system
        for name, fn in systems.items():
            if args.only and name != args.only:
                continue
            try:
                rounds.setdefault(name, []).append(fn(sizes, args.n, args.inflight))
            except Exception as exc:  # a missing alternative is reported, not fatal
                print(f"{name}: not measured ({type(exc).__name__}: {exc})")
    for name, got in rounds.items():
        merged = {
            size: {k: round(statistics.median(r[size][k] for r in got), 3) for k in got[0][size]} for size in got[0]
        }
        results[name] = {**results.get(name, {}), **merged}  # --only keeps the other sizes
    print(
        f"null task round trip on 127.0.0.1, {args.n} sequential (p50/p99) and {args.inflight} in flight (tasks/s)"
        + (f"; median of {args.repeat} rounds" if args.repeat > 1 else "")
    )
    for size in sizes:
        print(f"\npayload {size // 1024} KiB")
        relay = results.get("bare pyzmq relay", {}).get(size)
        for name, per in results.items():
            if size not in per:
                continue
            r = per[size]
            ratio = f"  x{r['p50_ms'] / relay['p50_ms']:.2f} relay p50" if relay else ""
            where = ""
            if "on_leader" in r:  # lamamesh's one-at-a-time run: by ticket, and where (see bench_lamamesh)
                where = f"  ({r['by_ticket']:g} by ticket, {r['on_leader']:g} on the leader's node)"
            print(
                f"  {name:18s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                f"{r['tasks_per_s']:8.1f} tasks/s{ratio}{where}"
            )
    save(
        args.out,
        {
            "n": args.n,
            "inflight": args.inflight,
            "repeat": args.repeat,
            "results": {k: {str(s): v for s, v in per.items()} for k, per in results.items()},
        },
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
