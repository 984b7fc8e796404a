"""``lamamesh join --http PORT``: the node's HTTP face (aiohttp).

aiohttp because it runs inside the node's own asyncio loop (no second server process or
thread, unlike a WSGI/ASGI stack that needs uvicorn beside it), is one well-kept package,
and its client serves the tests.

- ``GET /``: the editor (brush a mask over a photo, run it through the mesh); ``GET /mesh``: the
  mesh live (the ``status`` snapshot, polled). Static files from ``web/`` in the package, no CDN.
  ``GET /samples`` lists the bundled sample photos, ``GET /samples/NAME`` serves one.
- ``GET /health``: this node's state and a one-line mesh summary, from the node's own view
  (no network round trip): 200 when it serves, 503 while it starts or leaves.
- ``GET /api/v1/status``: the same snapshot as ``lamamesh status --json`` (asked of the leader).
- ``GET /metrics``: Prometheus text format (``metrics.py``).
- ``POST /api/v1/inpaint``: IOPaint's request body (base64 ``image`` and ``mask``, the
  ``hd_strategy*`` fields; every other field ignored), answered as IOPaint does: the image
  bytes in the input's format. The task goes through the mesh like any ``submit``: a client
  inside this node submits it to the leader, which may place it on any node. Errors are JSON
  ``{"error", "detail", "code"}`` (``detail`` as IOPaint's FastAPI answers) with a 4xx/5xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from mesh import const
from mesh.cluster.face import NodeFace
from mesh.errors import ConfigError, NoMesh
from mesh.execute.header import pixels
from mesh.execute.models import data_dir
from mesh.kinds import Priority
from mesh.surface.client import Client, Job
from mesh.surface.metrics import Metrics

log = logging.getLogger("lamamesh.http")

STATUS_BY_CODE = {
    "input": 400,
    "model": 400,
    "config": 400,
    "protocol": 400,
    "overloaded": 429,
    "timeout": 504,
    "failed": 500,
    "no_mesh": 503,
    "no_capable_node": 503,
}
WEB = Path(__file__).parent / "web"  # the pages' HTML, JS and CSS, shipped in the package
SAMPLES = data_dir() / "samples" / "images"
SAMPLE_NAMES = tuple(sorted(p.name for p in SAMPLES.glob("*.jpg")))  # read once, at import
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
HD_STRATEGIES = {"crop": "Crop", "resize": "Resize", "original": "Original"}
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp"}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "input") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error(status: int, message: str, code: str = "input") -> web.Response:
    return web.json_response({"error": message, "detail": message, "code": code}, status=status)


def b64(value: Any, what: str) -> bytes:
    """IOPaint sends raw base64 or a data URL (``data:image/png;base64,...``)."""
    if value == "":
        raise BadRequest(f"{what!r} is empty")
    if not isinstance(value, str):
        raise BadRequest(f"{what!r} must be a base64 string")
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        data = _b64decode(value)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what!r} is not valid base64") from None
    if not data:
        raise BadRequest(f"{what!r} is empty")
    return data


_B64_STEP = 4 * 2**20  # characters decoded at a time (a multiple of 4)


def _b64decode(text: str) -> bytes:
    """Strict base64 in 4 Mi-character steps: it runs in a thread, and each step holds the GIL for
    a few ms only, so the node's loop keeps its heartbeats while a 90 MiB body is decoded."""
    if len(text) <= _B64_STEP:
        return base64.b64decode(text, validate=True)
    if len(text) % 4:
        raise binascii.Error("incorrect padding")
    out = bytearray()
    for i in range(0, len(text), _B64_STEP):
        out += binascii.a2b_base64(text[i : i + _B64_STEP], strict_mode=True)
    return bytes(out)


def int_field(body: dict[str, Any], name: str, default: int) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= 1_000_000:
        raise BadRequest(f"{name!r} must be a whole number from 0 to 1000000")
    return int(v)


def _no_constant(token: str) -> Any:
    raise BadRequest(f"the body holds {token}, which is not a number JSON allows")


def parse_body(raw: bytes) -> Job:
    """The request body as a job (run in a thread: a body of tens of MiB takes seconds to parse, and
    the node's loop must keep its heartbeats); raises ``BadRequest`` with the reason."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("the body is nested too deep to be an InpaintRequest") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON (IOPaint's InpaintRequest: base64 'image' and 'mask')") from None
    return job_from_body(body)


def name_field(body: dict[str, Any], name: str, default: str) -> str:
    v = body.get(name)
    if v is None or v == "":
        return default
    if not isinstance(v, str) or len(v) > const.MAX_NAME_CHARS:
        raise BadRequest(f"{name!r} must be a string of at most {const.MAX_NAME_CHARS} characters")
    return v


def job_from_body(body: Any) -> Job:
    """An IOPaint ``InpaintRequest`` as a job; raises ``BadRequest`` with the reason."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with base64 'image' and 'mask'")
    image, mask = b64(body.get("image"), "image"), b64(body.get("mask"), "mask")
    strategy = body.get("hd_strategy") or "Crop"
    if not isinstance(strategy, str) or strategy.lower() not in HD_STRATEGIES:
        raise BadRequest(f"'hd_strategy' must be Crop, Resize or Original, not {strategy!r}")
    return Job(
        image,
        mask,
        model=name_field(body, "model", "builtin"),  # ours, not IOPaint's
        priority=Priority.INTERACTIVE,
        hd_strategy=HD_STRATEGIES[strategy.lower()],
        crop_margin=int_field(body, "hd_strategy_crop_margin", const.HD_CROP_MARGIN),
        crop_trigger=int_field(body, "hd_strategy_crop_trigger_size", const.HD_CROP_TRIGGER),
        resize_limit=int_field(body, "hd_strategy_resize_limit", const.HD_RESIZE_LIMIT),
        pixels=pixels(image),
        label="http",
    )


class HttpApi:
    def __init__(self, node: NodeFace, bind: str, port: int) -> None:
        self.node = node
        self.bind = bind
        self.port = port
        self.metrics = Metrics(node)
        self._idle: list[Client] = []  # in-process clients to our own task port, one per request in flight
        self._runner: web.AppRunner | None = None
        self._parsing = asyncio.Semaphore(const.HTTP_PARSE_CONCURRENCY)  # bodies parsed at once (memory, CPU)
        app = web.Application(client_max_size=const.HTTP_MAX_BODY, middlewares=[self._errors])
        app.router.add_get("/", self._page("index.html"))
        app.router.add_get("/mesh", self._page("mesh.html"))
        app.router.add_static("/static", WEB)
        app.router.add_get("/samples", self.samples)
        app.router.add_get("/samples/{name}", self.sample)
        app.router.add_get("/health", self.health)
        app.router.add_get("/api/v1/status", self.status)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_post("/api/v1/inpaint", self.inpaint)
        self.app = app

    async def start(self) -> int:
        """Bind and serve; returns the port (a port in use fails here, before the node advertises)."""
        # keepalive_timeout bounds a request head too: aiohttp (the 3.14 pyproject requires) arms it when
        # a connection opens and closes one that has not sent a whole head by then (half-sent requests
        # held sockets forever; tests/test_http.py)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, keepalive_timeout=const.HTTP_HEADER_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ConfigError(f"cannot serve HTTP on {self.bind}:{self.port}: {exc.strerror}") from None
        if not self.bind.startswith("127.") and self.bind not in ("localhost", "::1"):
            log.warning(
                "HTTP on %s:%d is open to the network: anyone who reaches it can submit tasks (no mesh key)",
                self.bind,
                self.port,
            )
        self.node.observe_tasks(self.metrics.observe_task)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "HTTP on http://%s:%d (editor at /, the mesh at /mesh; /health, /api/v1/status, /metrics, "
            "POST /api/v1/inpaint)",
            self.bind,
            self.port,
        )
        return self.port

    async def close(self) -> None:
        for c in self._idle:
            c.close()
        self._idle.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every failure is one JSON error; nothing escapes as a traceback page."""
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except BadRequest as exc:
            return error(exc.status, str(exc), exc.code)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the body is over the limit of {const.HTTP_MAX_BODY} bytes", "overloaded")
        except web.HTTPException as exc:
            return error(exc.status, exc.reason, "input")
        except NoMesh as exc:
            return error(503, str(exc), exc.code)
        except Exception as exc:  # a bug answering one request must not take the node down
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error(500, f"{type(exc).__name__}: {exc}", "failed")

    # ---- the client this node uses to go through the mesh -----------------------------------
    @contextlib.asynccontextmanager
    async def _client(self) -> Any:
        node = self.node
        if self._idle:
            client = self._idle.pop()
        else:
            client = Client(node.context, [node.task_address], dead_timeout=node.dead_timeout)
            await client.connect()
        ok = False
        try:
            yield client
            ok = True
        finally:
            if ok and len(self._idle) < 16:
                self._idle.append(client)
            else:
                client.close()

    # ---- handlers ----------------------------------------------------------------------
    @staticmethod
    def _page(name: str) -> Any:
        async def page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(WEB / name, headers=PAGE_HEADERS)

        return page

    async def samples(self, request: web.Request) -> web.Response:
        return web.json_response(list(SAMPLE_NAMES))

    async def sample(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in SAMPLE_NAMES:  # only the listed names: no path ever built from the request
            return error(404, f"no sample named {name[:80]!r}; GET /samples lists them")
        return web.FileResponse(SAMPLES / name, headers=PAGE_HEADERS)

    async def health(self, request: web.Request) -> web.Response:
        health = self.node.health()
        body = asdict(health)
        state = health.status
        return web.json_response(body, status=200 if state == "ok" else 503)

    async def status(self, request: web.Request) -> web.Response:
        async with self._client() as client:
            snap = await client.snapshot()
        return web.json_response(snap.to_json())

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def inpaint(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        resp = await self._inpaint(request)
        self.metrics.http_seconds.labels(str(resp.status)).observe(time.monotonic() - started)
        return resp

    async def _inpaint(self, request: web.Request) -> web.Response:
        declared = request.content_length or const.HTTP_MAX_BODY
        wait = const.HTTP_BODY_GRACE + min(declared, const.HTTP_MAX_BODY) / 2**20
        try:
            async with asyncio.timeout(wait):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the body is over the limit of {const.HTTP_MAX_BODY} bytes", "overloaded")
        except TimeoutError:
            log.info("HTTP inpaint refused: the body did not arrive within %.0f s", wait)
            return error(408, f"the request body did not arrive within {wait:.0f} s", "input")
        try:
            async with self._parsing:
                job = await asyncio.to_thread(parse_body, raw)
        except BadRequest as exc:
            log.info("HTTP inpaint refused: %s", exc)
            return error(exc.status, str(exc), exc.code)
        finally:
            del raw
        async with self._client() as client:
            (res,) = await client.run([job], timeout=const.HTTP_TASK_TIMEOUT)
        if not res.ok:
            code = res.error_code or "failed"
            return error(STATUS_BY_CODE.get(code, 500), res.error, code)
        headers = {
            "Content-Type": MEDIA_TYPES.get(res.out_format, "application/octet-stream"),
            "X-Lamamesh-Node": res.node_id,
            "X-Lamamesh-Slot-Ms": f"{res.slot_ms:.1f}",
            "X-Seed": "0",
        }
        if res.notes:  # the worker's warnings (mask resized, empty, covering most of the image)
            headers["X-Lamamesh-Warning"] = " | ".join(res.notes).encode("ascii", "replace").decode()
            log.info("HTTP inpaint: %s", "; ".join(res.notes))
        return web.Response(body=res.data, headers=headers)
