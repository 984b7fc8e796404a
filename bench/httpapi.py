"""The HTTP API's own cost: `POST /api/v1/inpaint` against the Python client, on one mesh.

A user who calls the mesh the way IOPaint is called (a base64 JSON body, the image bytes back) pays
for HTTP, JSON and base64 on top of the task; this measures how much, and guards the API's latency
(the twelfth session found a change that made every request connect to every member first: p50
2.3 -> 4.6 ms on 4 nodes). N `lamamesh join` processes on 127.0.0.1, the first serving HTTP:

- HTTP one at a time: p50 / p99 over --requests requests on one kept-alive connection;
- HTTP with --concurrency connections at once: requests/s over 2 x --requests;
- the Python client (what `submit` uses), one at a time, the same image and mask: p50 / p99.

``--model bench`` (default) runs the benchmark-only executor (`--bench-delay-ms 0`: the task returns
its input at once, so only the path is measured); ``--model builtin`` runs the built-in model.

    python bench/httpapi.py [--nodes 4] [--requests 200] [--concurrency 8] [--sample coffee]
                            [--model bench|builtin] [--out httpapi]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import ROOT, Job, cluster, pct, run_jobs, save, tmpdir, wait_mesh

from mesh.surface.demo import free_port_block

SAMPLES = ROOT / "mesh" / "data" / "samples"


def inputs(sample: str) -> tuple[bytes, bytes]:
    """A bundled sample photo (JPEG) and its mask (PNG), as `lamamesh demo` sends them."""
    return (SAMPLES / "images" / f"{sample}.jpg").read_bytes(), (SAMPLES / "masks" / f"{sample}.png").read_bytes()


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/api/v1/inpaint", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or not data:
        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sample", default="coffee", help="a bundled sample: astronaut, chelsea, coffee (600x400), rocket")
    ap.add_argument("--model", choices=("bench", "builtin"), default="bench")
    ap.add_argument("--out", default="httpapi", help="name of the JSON under bench/results")
    args = ap.parse_args()
    image, mask = inputs(args.sample)
    body = json.dumps({"image": base64.b64encode(image).decode(), "mask": base64.b64encode(mask).decode()}).encode()
    extra = ["--slots", "1"] + (["--bench-delay-ms", "0"] if args.model == "bench" else [])
    port = free_port_block(1)
    out: dict[str, Any] = {}
    with cluster(tmpdir(), extra=extra) as c:
        c.start(1, args=["--http", str(port)])
        if args.nodes > 1:
            c.start(args.nodes - 1)
        wait_mesh(c, args.nodes)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(20):  # warm-up: the model loaded, the connections made
            post(conn, body)
        lat = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            post(conn, body)
            lat.append((time.perf_counter() - t0) * 1000)
        conn.close()
        out["http_one_at_a_time"] = {"p50_ms": round(statistics.median(lat), 3), "p99_ms": round(pct(lat, 0.99), 3)}

        local = threading.local()

        def one(_: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            post(local.conn, body)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(2 * args.requests)))
        out["http_concurrent"] = {
            "concurrency": args.concurrency,
            "requests_per_s": round(2 * args.requests / (time.perf_counter() - t0), 1),
        }

        res, _, _ = run_jobs(c.nodes[0].port, [Job(image, mask) for _ in range(args.requests + 20)], window=1)
        bad = [r for r in res if not r.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} client tasks failed, e.g. {bad[0].error_code}: {bad[0].error}")
        clat = [r.latency_ms for r in res[20:]]
        out["client_one_at_a_time"] = {"p50_ms": round(statistics.median(clat), 3), "p99_ms": round(pct(clat, 0.99), 3)}
    h1, hc, cl = out["http_one_at_a_time"], out["http_concurrent"], out["client_one_at_a_time"]
    print(
        f"{args.nodes} nodes, {args.model}, {args.sample}.jpg ({len(image):,} bytes; JSON body {len(body):,}): "
        f"HTTP p50 {h1['p50_ms']} ms, p99 {h1['p99_ms']} ms; {hc['requests_per_s']} requests/s with "
        f"{args.concurrency} at once; the Python client p50 {cl['p50_ms']} ms, p99 {cl['p99_ms']} ms"
    )
    save(args.out, {"args": vars(args), "image_bytes": len(image), "body_bytes": len(body), **out})


if __name__ == "__main__":
    main()
