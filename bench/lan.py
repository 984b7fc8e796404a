"""The mesh on a shaped LAN: hosts in network namespaces on one bridge, every host's link shaped
with ``tc tbf`` in both directions, real ``lamamesh join`` processes (the BENCHMARK-ONLY sleep
executor, so many nodes fit on 2 cores) and one client process per client host.

Prints mesh tasks/s against the compute limit (nodes x slots x 1000 / service ms) and what the
clients' own links carry (clients x rate / payload), and saves JSON under bench/results/.

    sudo python bench/lan.py [--rate 100mbit] [--payload 1048576] [--service-ms 100]
                             [--nodes 4] [--clients 1] [--tasks 100] [--window 64] [--kill-leader] [--out lan]

``--window``: tasks each client keeps in flight (a small one, say 10, leaves the leader's queue empty, so
every task goes by a ticket: 8 nodes with ``--window 10`` found tickets' bytes arriving after their hold
ended on the busy link). ``--kill-leader``: kill -9 the leader's node once a third of the tasks are
answered; every output must still arrive exactly once (the client counts answers and resends). Needs root, ``ip`` and
``tc``; without them it says so in one line and exits 0. The tbf shaping uses a 64 kb burst and a
50 ms queue; ``LAN_BURST`` / ``LAN_LATENCY`` in the environment change them (tried: 20-200 ms queues
give the same figures).

Every host runs ``--cc`` (default ``cubic``, what Linux distributions, Windows and macOS use out of
the box; this VM's kernel defaults to ``bbr``, under which the same traffic, with the mesh or plain
TCP, tops out near 0.81 of the link rate): the congestion control is added to the machine's allowed
list for the run and put back after. ``--cc ""`` keeps the machine's default. Clients start together:
each says when it is connected (``_lanclient.start_together``) and the run starts once all have.
``LAN_KEEP=1`` keeps the run's folder (node logs) instead of removing it. ``LAN_DUMP=FILE`` writes
each client's own figures as they came, with its link's byte counters every 100 ms (a timeline of
both directions: where the link idled) and when each answer came and from which node (``answered``);
``LAN_SS=FILE`` samples the first client host's TCP sockets every 50 ms (``_sample_sockets``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import save_runs  # noqa: E402
from _lanclient import release  # noqa: E402


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _tc(ns: str, dev: str, rate: str) -> None:
    # tbf: the rate, a burst a few packets deep, and a queue of 50 ms at that rate
    subprocess.run(
        ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
         "burst", os.environ.get("LAN_BURST", "64kb"), "latency", os.environ.get("LAN_LATENCY", "50ms")],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip


def unavailable() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    name = f"lmprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace here: {exc}"
    _ip("netns", "del", name)
    return ""


class Lan:
    """``n`` hosts (10.88.<net>.1..n on eth0) on one bridge inside a hub namespace; each host's link
    shaped to ``rate`` both ways: its eth0 egress (uploads) and the hub side's egress (downloads)."""

    def __init__(self, n: int, rate: str, cc: str = "") -> None:
        tag = secrets.token_hex(2)
        self.allowed_before = ""
        self.net = 100 + int(tag, 16) % 150
        self.hub = f"lbhub{tag}"
        self.hosts = [f"lbh{i}{tag}" for i in range(1, n + 1)]
        self.made: list[str] = []
        try:
            if cc:
                self._allow(cc)
            _ip("netns", "add", self.hub)
            self.made.append(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i, ns in enumerate(self.hosts, start=1):
                veth = f"lbv{i}{tag}"
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "netns", self.hub)
                _ip("-n", self.hub, "link", "set", veth, "master", "br0")
                _ip("-n", self.hub, "link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{self.addr(i - 1)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                if rate:
                    _tc(ns, "eth0", rate)
                    _tc(self.hub, veth, rate)
                settings = os.environ.get("LAN_SYSCTL", "").split()  # e.g. net.ipv4.tcp_slow_start_after_idle=0
                if cc:
                    settings.insert(0, f"net.ipv4.tcp_congestion_control={cc}")
                for setting in settings:
                    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True, timeout=10)
        except BaseException:
            self.close()
            raise

    def _allow(self, cc: str) -> None:
        """A host namespace may only pick a congestion control the machine allows: add ``cc`` to the
        allowed list for the run (put back by ``close``)."""
        base = Path("/proc/sys/net/ipv4")
        available = (base / "tcp_available_congestion_control").read_text().split()
        if cc not in available:
            raise SystemExit(f"--cc {cc}: this kernel has {' '.join(available)}")
        allowed = (base / "tcp_allowed_congestion_control").read_text().split()
        if cc not in allowed:
            self.allowed_before = " ".join(allowed)
            (base / "tcp_allowed_congestion_control").write_text(" ".join([*allowed, cc]))

    def addr(self, i: int) -> str:
        return f"10.88.{self.net}.{i + 1}"

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made.clear()
        if self.allowed_before:
            Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").write_text(self.allowed_before)
            self.allowed_before = ""


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def rate_bytes(rate: str) -> float:
    units = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
    for u, f in units.items():
        if rate.endswith(u):
            return float(rate[: -len(u)]) * f
    raise SystemExit(f"--rate {rate!r}: give it as 100mbit, 1gbit or 500kbit")


def wait_formed(lan: Lan, ns: str, port: int, nodes: int, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    """Until every node is alive and registered with the leader (status --json from a client host)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        p = subprocess.run(
            in_ns(ns, sys.executable, "-m", "mesh", "status", "--json", "--peer", f"{lan.addr(0)}:{port}"),
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        if p.returncode == 0:
            s: dict[str, Any] = json.loads(p.stdout)
            live = [n for n in s["nodes"] if n["alive"]]
            if s["leader"] and len(live) == nodes and all(n.get("ready") for n in live):
                return s
            last = f"{len(live)} alive, leader {s['leader'] or '-'}"
        else:
            last = p.stderr.strip()[-200:]
        time.sleep(0.3)
    raise SystemExit(f"the mesh did not form within {timeout:g} s ({last})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    lan = Lan(args.nodes + args.clients, args.rate, args.cc)
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="lmlan"))
    env = {**os.environ, "LAMAMESH_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    port = 5555
    try:
        if args.raw:
            return _run_raw(args, lan, work, env)
        for i in range(args.nodes):
            log = (work / f"node{i}.log").open("wb")
            cmd = [sys.executable, "-m", "mesh", "join", "--mesh", "lanbench", "--no-mdns", "--bind",
                   lan.addr(i), "--port", str(port), "--slots", str(args.slots),
                   "--bench-delay-ms", str(args.service_ms), *args.node_args.split()]  # fmt: skip
            if i:
                cmd += ["--peer", f"{lan.addr(0)}:{port}"]
            procs.append(subprocess.Popen(in_ns(lan.hosts[i], *cmd), stdout=log, stderr=subprocess.STDOUT, env=env))
            if i == 0:
                time.sleep(0.5)  # the first node claims leadership alone, the others join it
        client_hosts = lan.hosts[args.nodes :]
        snap = wait_formed(lan, client_hosts[0], port, args.nodes, env)
        leader = next(n for n in snap["nodes"] if n["id"] == snap["leader"])
        barrier = work / "start"
        barrier.mkdir()
        outs = [work / f"client{c}.json" for c in range(args.clients)]
        clients = []
        for c, ns in enumerate(client_hosts):
            cmd = [sys.executable, str(ROOT / "bench" / "_lanclient.py"), "--peer", f"{lan.addr(0)}:{port}",
                   "--tasks", str(args.tasks), "--payload", str(args.payload), "--barrier", str(barrier),
                   "--out", str(outs[c]), "--seed", str(c), "--window", str(args.window)]  # fmt: skip
            clients.append(subprocess.Popen(in_ns(ns, *cmd), env=env))
        release(barrier, len(clients))  # every client starts at the same instant, once all are connected
        sampler = _sample_sockets(client_hosts[0], clients[0]) if os.environ.get("LAN_SS") else None
        killed = ""
        if args.kill_leader:
            victim = next(i for i in range(args.nodes) if lan.addr(i) == leader["host"])
            progress = work / "client0.json.progress"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if progress.exists() and int(progress.read_text() or 0) >= args.tasks // 3:
                    break
                time.sleep(0.02)
            procs[victim].send_signal(signal.SIGKILL)
            killed = leader["id"]
        for p in clients:
            p.wait(timeout=900)
        if sampler is not None:
            sampler.join(10)
        per = [json.loads(o.read_text()) for o in outs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        lan.close()
        if os.environ.get("LAN_KEEP"):
            print(f"node and client logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return _figures(args, per, killed, snap["leader"])


def _sample_sockets(ns: str, client: subprocess.Popen[bytes]) -> threading.Thread:
    """``LAN_SS=FILE``: the first client host's TCP sockets (``ss -tin``: each connection's send queue,
    congestion window, RTT and the peer's advertised window) every 50 ms while that client runs, one
    JSON line ``[unix time, ss output]`` each; match them with ``LAN_DUMP``'s start time. It showed
    the first uploads sharing the client's link, two of them held to the worker's 97 KB window."""

    def run() -> None:
        with open(os.environ["LAN_SS"], "w") as out:
            while client.poll() is None:
                got = subprocess.run(in_ns(ns, "ss", "-tinH", "state", "established"), capture_output=True,
                                     text=True, timeout=10)  # fmt: skip
                out.write(json.dumps([round(time.time(), 4), got.stdout]) + "\n")
                time.sleep(0.05)

    t = threading.Thread(target=run, name="lan-ss", daemon=True)
    t.start()
    return t


def _run_raw(args: argparse.Namespace, lan: Lan, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """--raw: the same hosts, links and traffic with no mesh (bench/_rawlan.py): plain TCP echo servers
    that sleep the service time, clients that keep their window out to the least-busy server."""
    raw = str(ROOT / "bench" / "_rawlan.py")
    servers = [
        subprocess.Popen(in_ns(lan.hosts[i], sys.executable, raw, "server", "--host", lan.addr(i), "--port", "6000",
                               "--service-ms", str(args.service_ms), "--slots", str(args.slots)), env=env)
        for i in range(args.nodes)
    ]  # fmt: skip
    try:
        time.sleep(1.5)  # the servers bind
        barrier = work / "start"
        barrier.mkdir()
        outs = [work / f"raw{c}.json" for c in range(args.clients)]
        targets = ",".join(f"{lan.addr(i)}:6000" for i in range(args.nodes))
        clients = [
            subprocess.Popen(in_ns(ns, sys.executable, raw, "client", "--servers", targets, "--tasks", str(args.tasks),
                                   "--payload", str(args.payload), "--barrier", str(barrier), "--out", str(outs[c]),
                                   "--window", str(args.window)),
                             env=env)
            for c, ns in enumerate(lan.hosts[args.nodes :])
        ]  # fmt: skip
        release(barrier, len(clients))
        for p in clients:
            p.wait(timeout=900)
        per = [json.loads(o.read_text()) for o in outs]
    finally:
        for p in servers:
            p.kill()
            p.wait(5)
    return _figures(args, per, "", "")


def _figures(args: argparse.Namespace, per: list[dict[str, Any]], killed: str, leader: str) -> dict[str, Any]:
    if os.environ.get("LAN_DUMP"):
        Path(os.environ["LAN_DUMP"]).write_text(json.dumps(per))
    began = min(r["started"] for r in per)
    ended = max(r["ended"] for r in per)
    total = sum(r["ok"] for r in per)
    tput = total / (ended - began)
    compute = args.nodes * args.slots * 1000 / args.service_ms
    link = args.clients * rate_bytes(args.rate) / args.payload if args.rate else float("inf")
    limit = min(compute, link)
    by_node: dict[str, int] = {}
    for r in per:
        for k, v in r["by_node"].items():
            by_node[k] = by_node.get(k, 0) + v
    return {
        "nodes": args.nodes,
        "clients": args.clients,
        "slots": args.slots,
        "rate": args.rate,
        "payload": args.payload,
        "service_ms": args.service_ms,
        "tasks_per_client": args.tasks,
        "window": args.window,
        "answered": total,
        "failed": sum(r["failed"] for r in per),
        "duplicates": sum(r["duplicates"] for r in per),
        "resent": sum(r["resent"] for r in per),
        "killed_leader": killed,
        "seconds": round(ended - began, 3),
        "client_seconds": [round(r["ended"] - began, 3) for r in per],
        "tasks_per_s": round(tput, 2),
        "compute_limit": round(compute, 2),
        "client_link_limit": round(link, 2),
        "of_limit": round(tput / limit, 3),
        "by_node": by_node,
        "leader": leader,
        "raw": args.raw,
        "cc": args.cc or Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
        "client_links": [_link_use(r.get("link", []), rate_bytes(args.rate)) for r in per] if args.rate else [],
        "client_tcp": [r.get("tcp", {}) for r in per],
    }


def _link_use(samples: list[list[float]], rate: float) -> dict[str, float]:
    """How busy a client's link was, each way: bytes over the run against what the link carries, and
    the share of 100 ms samples in which it carried under half its rate (gaps in the flow)."""
    if len(samples) < 3:
        return {}
    t = [s[0] for s in samples]
    out: dict[str, float] = {}
    for way, i in (("up", 1), ("down", 2)):
        rates = [(samples[k + 1][i] - samples[k][i]) / (t[k + 1] - t[k]) for k in range(len(samples) - 1)]
        out[f"{way}_busy"] = round((samples[-1][i] - samples[0][i]) / (t[-1] - t[0]) / rate, 3)
        out[f"{way}_gaps"] = round(sum(r < rate / 2 for r in rates) / len(rates), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="100mbit", help="each host's link, both directions ('' = unshaped)")
    ap.add_argument("--payload", type=int, default=1 << 20, help="bytes of each image (the result is as big)")
    ap.add_argument("--service-ms", type=float, default=100.0)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=100, help="tasks per client")
    ap.add_argument("--window", type=int, default=64, help="tasks each client keeps in flight (submit's default: 64)")
    ap.add_argument("--kill-leader", action="store_true")
    ap.add_argument(
        "--cc",
        default="cubic",
        help="TCP congestion control of every host ('' = the machine's default; see the module doc)",
    )
    ap.add_argument("--raw", action="store_true", help="no mesh: plain TCP echo servers (the links' own floor)")
    ap.add_argument("--node-args", default="", help='more flags for every `join` (e.g. "--placement least-loaded")')
    ap.add_argument("--label", default="", help="what code this is (saved with the figures)")
    ap.add_argument("--out", default="", help="name of the JSON under bench/results (default: print only)")
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"bench/lan.py skipped: {why}")
        return
    r = run(args)
    r["label"] = args.label
    print(
        ("raw TCP, no mesh: " if args.raw else "")
        + f"{r['nodes']} nodes x {r['slots']} slot, {r['clients']} clients, {args.rate or 'unshaped'} links, "
        f"{args.payload / 1024:g} KiB, {args.service_ms:g} ms: {r['tasks_per_s']} tasks/s "
        f"(compute {r['compute_limit']}, clients' links {r['client_link_limit']}) = {r['of_limit']} of the limit; "
        f"answered {r['answered']}, failed {r['failed']}, duplicates {r['duplicates']}, resent {r['resent']}"
        + (f"; leader {r['killed_leader']} killed" if r["killed_leader"] else "")
        + f"; by node {r['by_node']}"
    )
    for i, (use, tcp) in enumerate(zip(r["client_links"], r["client_tcp"], strict=False)):
        if tcp:
            print(f"  client {i} TCP: {tcp}; done at {r['client_seconds'][i]} s")
        if use:
            print(
                f"  client {i}: uplink {use['up_busy']:.0%} busy ({use['up_gaps']:.0%} of 100 ms under half), "
                f"downlink {use['down_busy']:.0%} ({use['down_gaps']:.0%} under half)"
            )
    if args.out:
        save_runs(args.out, [r])


if __name__ == "__main__":
    main()
