"""The ``lamamesh`` command line. The only place that reads argv and the environment."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mesh import aio, const, malloc
from mesh import config as config_mod
from mesh.config import Config
from mesh.errors import InputError, MeshError, NoMesh, TaskFailed
from mesh.execute.models import Registry
from mesh.kinds import Priority
from mesh.surface.snapshot import NODE_COLUMNS, Snapshot, node_cells, summary

if TYPE_CHECKING:
    from mesh.surface.client import Client, Job, JobResult

# the client, the node and ZeroMQ are imported inside the commands that use them: a slot process
# (spawned) re-imports this module as its parent's __main__, and `join` starts sooner without them

app = typer.Typer(
    name="lamamesh",
    help="Turn the machines on a LAN into one inpainting cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model registry: list, add, fetch.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("lamamesh")
T = TypeVar("T")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}

MeshOpt = Annotated[str | None, typer.Option("--mesh", help="Mesh name (nodes of other meshes are ignored).")]
PeerOpt = Annotated[list[str] | None, typer.Option("--peer", help="HOST:PORT of a node's task port (repeatable).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file.")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Task port (default 5555; 0 = ephemeral).")]
LogOpt = Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--secret-file", help="Mesh key file (lamamesh keygen); env LAMAMESH_SECRET_FILE."),
]
# the options of join and submit, one name each (their command signatures stay one line per option)
SlotsOpt = Annotated[int | None, typer.Option("--slots", help="Slot processes (default: from the hardware).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")]
GpusOpt = Annotated[
    str | None,
    typer.Option("--gpus", help="NVIDIA GPUs to use, one slot each: all (default), none, or indexes like 0,2."),
]
CpuSlotsOpt = Annotated[
    int | None, typer.Option("--cpu-slots", help="CPU slots beside the GPU ones (default 0 on a GPU machine).")
]
BindOpt = Annotated[str | None, typer.Option("--bind", help="Interface address to listen on (default 0.0.0.0).")]
HttpOpt = Annotated[
    int | None,
    typer.Option(
        "--http",
        help="Serve HTTP on this port: the web editor at /, the mesh at /mesh, health, status, metrics, IOPaint API.",
    ),
]
HttpBindOpt = Annotated[
    str | None,
    typer.Option("--http-bind", help="Address HTTP listens on (default 127.0.0.1; 0.0.0.0 = the LAN)."),
]
AdvertiseOpt = Annotated[
    str | None,
    typer.Option("--advertise", help="Address peers should reach this node at (default: --bind or the LAN address)."),
]
MdnsOpt = Annotated[
    bool | None, typer.Option("--mdns/--no-mdns", help="Find peers over mDNS (default on; off: only --peer).")
]
DeadTimeoutOpt = Annotated[
    float | None, typer.Option("--dead-timeout", help="Seconds of silence before a peer is dead (default 2).")
]
CopyModelsOpt = Annotated[
    bool | None,
    typer.Option("--copy-models/--no-copy-models", help="Copy models peers hold that this node lacks (default on)."),
]
HeartbeatOpt = Annotated[float | None, typer.Option("--heartbeat", help="Seconds between heartbeats (default 0.3).")]
LogJsonOpt = Annotated[bool | None, typer.Option("--log-json", help="Log one JSON object per line.")]
ImageOpt = Annotated[Path, typer.Argument(help="An image file, or a folder of images (batch).")]
MaskOpt = Annotated[Path, typer.Argument(help="Its mask (white = fill), or a folder of masks matched by file stem.")]
SubmitOutputOpt = Annotated[Path | None, typer.Option("-o", "--output", help="Output file (folder for a batch).")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name (lamamesh models list).")]
PriorityOpt = Annotated[str | None, typer.Option("--priority", help="interactive or batch.")]
SessionOpt = Annotated[str, typer.Option("--session", help="Keep successive edits on one node.")]
HdStrategyOpt = Annotated[str, typer.Option("--hd-strategy", help="Crop, Resize or Original.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds to wait for all results (one image: default "
        f"{const.SUBMIT_TIMEOUT:g}, the leader's deadlines for every try; a folder: none, "
        "each task is answered or failed by the leader's deadlines).",
    ),
]
NoLocalOpt = Annotated[bool, typer.Option("--no-local", help="Fail (exit 3) instead of running locally.")]
QualityOpt = Annotated[
    int | None,
    typer.Option("--quality", help="JPEG quality 1-100 (default: the input's own, estimated; else 95)."),
]
OutFormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="Output format of a batch: png, jpg, webp or same (default: same as each input)."),
]
RecursiveOpt = Annotated[
    bool,
    typer.Option(
        "--recursive", "-r", help="A batch takes the photos of subfolders too; outputs mirror them under OUT."
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo photos whose output exists (a batch skips them by default: run the same command "
        "again to continue), and allow writing over an input.",
    ),
]


class JsonLines(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def _setup_logging(level: str, as_json: bool = False) -> None:
    if level.lower() not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level must be debug, info, warning or error, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if as_json else logging.Formatter("%(asctime)s lamamesh %(levelname)s %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def pixels(data: bytes) -> int:
    """Width x height from the image header (Pillow loads only for commands that send images)."""
    from mesh.execute.header import pixels as header_pixels

    return header_pixels(data)


def _fail(exc: MeshError) -> typer.Exit:
    err.print(f"lamamesh: {exc}", markup=False)
    return typer.Exit(exc.exit_code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body: a MeshError becomes one line on stderr and its exit code."""
    try:
        return fn()
    except MeshError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    return aio.run(coro)  # not asyncio.run: see mesh/aio.py


def _config(**flags: Any) -> Config:
    config_file = flags.pop("config", None)
    return config_mod.build(flags, config_file=config_file)


# ---------------------------------------------------------------------------------------
# join


def _raise_open_file_limit() -> None:
    """A node holds a descriptor per connection: at the common soft limit of 1,024 about 1,100 idle
    connections (a flood, or a big office) would leave it none to read /proc or accept with. Raise
    the soft limit to the hard one (at most ``OPEN_FILES_WANTED``) and say so."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = const.OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, const.OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            logging.getLogger("lamamesh").info("open-file limit raised from %d to %d", soft, want)
        except (ValueError, OSError) as exc:
            logging.getLogger("lamamesh").warning("open-file limit stays %d (could not raise it: %s)", soft, exc)


@app.command()
def join(
    mesh: MeshOpt = None,
    peer: PeerOpt = None,
    slots: SlotsOpt = None,
    device: DeviceOpt = None,
    gpus: GpusOpt = None,
    cpu_slots: CpuSlotsOpt = None,
    bind: BindOpt = None,
    port: PortOpt = None,
    http: HttpOpt = None,
    http_bind: HttpBindOpt = None,
    secret_file: KeyOpt = None,
    advertise: AdvertiseOpt = None,
    mdns: MdnsOpt = None,
    dead_timeout: DeadTimeoutOpt = None,
    copy_models: CopyModelsOpt = None,
    heartbeat: HeartbeatOpt = None,
    placement: Annotated[str | None, typer.Option("--placement", hidden=True)] = None,
    bench_delay_ms: Annotated[float | None, typer.Option("--bench-delay-ms", hidden=True)] = None,
    config: ConfigOpt = None,
    log_level: LogOpt = None,
    log_json: LogJsonOpt = None,
) -> None:
    """Run a node in the foreground until Ctrl-C (a graceful leave; a second Ctrl-C exits at once)."""

    def body() -> None:
        cfg = _config(
            mesh=mesh,
            peers=tuple(peer or ()),
            slots=slots,
            device=device,
            gpus=gpus,
            cpu_slots=cpu_slots,
            bind=bind,
            port=port,
            http=http,
            http_bind=http_bind,
            secret_file=secret_file,
            advertise=advertise,
            mdns=mdns,
            dead_timeout=dead_timeout,
            copy_models=copy_models,
            heartbeat_interval=heartbeat,
            placement=placement,
            bench_delay_ms=bench_delay_ms,
            config=config,
            log_level=log_level,
            log_json=log_json,
        )
        _join(cfg)

    _guard(body)


def _join(cfg: Config) -> None:
    """The node of ``join``: slots first, then the node, until a signal."""
    _setup_logging(cfg.log_level, cfg.log_json)
    _raise_open_file_limit()
    # the slot processes start first: they load ONNX Runtime and the model while this process
    # imports the node and binds its sockets (join -> first task is mostly these two)
    from mesh.execute import capabilities
    from mesh.execute.slots import SlotPool, make_executor

    caps = capabilities.detect(cfg.gpus)
    pool = make_executor(cfg, caps)
    if isinstance(pool, SlotPool):
        pool.spawn()
    if not cfg.secret_file:
        log.warning(
            "this mesh has no key: any machine that reaches this node can join it and submit tasks "
            "(lamamesh keygen > mesh.key, then --secret-file mesh.key on every node and client)"
        )
    _arun(_run_node(cfg, pool, caps))


async def _run_node(cfg: Config, pool: Any, caps: Any) -> None:
    """The node of ``join`` (with HTTP when asked) until a signal: the first leaves gracefully, a
    second exits at once (its slot processes killed with it)."""
    from mesh.cluster.node import Node
    from mesh.execute.slots import SlotPool

    node = Node(cfg, pool=pool, caps=caps)
    if cfg.http:
        from mesh.surface.http import HttpApi  # aiohttp is imported only by nodes that serve HTTP

        node.services.append(HttpApi(node, cfg.http_bind, cfg.http))
    hits = 0

    def on_signal() -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            log.info("stopping (again to exit at once)")
            node.request_stop()
            return
        if isinstance(node.pool, SlotPool):
            for s in node.pool.slots:
                if s.proc is not None and s.proc.is_alive():
                    s.proc.kill()
        os._exit(130)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await node.run()


# ---------------------------------------------------------------------------------------
# submit


def _read(path: Path, what: str) -> bytes:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None


def _write(path: Path, data: bytes | memoryview) -> None:
    """Atomically: a half-written file is never under the final name (a killed submit leaves a hidden
    ``.NAME.part`` at most, which the next batch into that folder removes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_parts(folder: Path) -> None:
    """The ``.NAME.part`` files a killed submit left in ``folder`` (only ours: hidden, ``.part``)."""
    if not folder.is_dir():
        return
    parts = [p for p in folder.glob(".*.part") if p.is_file()]
    for p in parts:
        p.unlink(missing_ok=True)
    if parts:
        err.print(f"lamamesh: removed {len(parts)} unfinished file(s) an earlier run left in {folder}", markup=False)


def _suffix_for(fmt: str) -> str:
    return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}.get(fmt, ".png")


def _images_in(folder: Path, recursive: bool, skip: Path | None = None) -> list[Path]:
    """The image files of ``folder`` (and its subfolders when ``recursive``, but not ``skip``)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    out = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if skip is not None and skip.exists():
        s = skip.resolve()
        out = [p for p in out if s not in p.resolve().parents]
    return sorted(out)


def _pair_batch(
    image_dir: Path, masks: Path, recursive: bool = False, skip: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, mask) pairs and the images with no mask. Masks are matched by file stem at the same
    place under MASKS as the image under IMAGE_DIR (or at MASKS' top), or one mask file for all."""
    images = _images_in(image_dir, recursive, skip)
    if masks.is_file():
        return [(p, masks) for p in images], []
    if not masks.is_dir():
        raise InputError(f"mask {masks} does not exist")
    by_place: dict[tuple[Path, str], Path] = {}
    for m in _images_in(masks, recursive, skip):
        by_place.setdefault((m.parent.relative_to(masks), m.stem), m)
    pairs: list[tuple[Path, Path]] = []
    missing: list[Path] = []
    for p in images:
        rel = p.parent.relative_to(image_dir)
        found = by_place.get((rel, p.stem)) or by_place.get((Path("."), p.stem))
        if found is None or found.resolve() == p.resolve():
            missing.append(p)
        else:
            pairs.append((p, found))
    return pairs, missing


async def _with_mesh(
    cfg: Config, no_local: bool | None, quiet: bool, work: Callable[[Client], Coroutine[Any, Any, T]]
) -> T:
    """Run ``work`` with a client of the mesh; with no mesh, on an embedded node unless ``no_local``
    (True: the user said --no-local; None: the command never runs locally)."""
    from mesh.surface.client import Client
    from mesh.wire.transport import Context, load_key

    ctx = Context(load_key(cfg.secret_file) if cfg.secret_file else None, cfg.max_frame_bytes)
    peers = [config_mod.parse_peer(p) for p in cfg.peers] or [(cfg.local_host, cfg.port or const.DEFAULT_TASK_PORT)]
    client = Client(ctx, peers, dead_timeout=cfg.dead_timeout)
    try:
        try:
            try:
                await client.connect()
            except NoMesh:
                if cfg.peers or not cfg.mdns:
                    raise
                await _connect_over_mdns(cfg, client, quiet)
        except NoMesh as exc:
            if no_local is None:
                raise
            if no_local:
                raise NoMesh(f"{exc} (and --no-local forbids running locally)") from None
            if not quiet:
                err.print(f"lamamesh: {exc}; running on an embedded local node", markup=False)
            from mesh.cluster.node import embedded  # only now: the node, zeroconf and psutil cost ~0.1 s to import

            async with embedded(cfg) as node:
                client.peers = [("127.0.0.1", node.task_port)]
                await client.connect()
                return await work(client)
        return await work(client)
    finally:
        client.close()
        ctx.close()


async def _connect_over_mdns(cfg: Config, client: Client, quiet: bool) -> None:
    """No --peer and no local node: look for the mesh over mDNS and connect through what answers."""
    from mesh.cluster.discovery import browse

    iface = "" if cfg.bind in ("0.0.0.0", "", "*") else cfg.bind
    found = await browse(cfg.mesh, const.CLIENT_MDNS_BROWSE, iface)
    if not found:
        local = f"{client.peers[0][0]}:{client.peers[0][1]}"
        raise NoMesh(
            f"no node of mesh {cfg.mesh!r} found over mDNS within {const.CLIENT_MDNS_BROWSE:g} s, none at {local}"
        )
    client.peers = [(f.hosts[0], f.task_port) for f in found]
    client.known = list(client.peers)
    if not quiet:
        err.print(f"lamamesh: found {len(found)} nodes of mesh {cfg.mesh!r} over mDNS", markup=False)
    await client.connect()


@app.command()
def submit(
    image: ImageOpt,
    mask: MaskOpt,
    output: SubmitOutputOpt = None,
    model: ModelOpt = "builtin",
    priority: PriorityOpt = None,
    session: SessionOpt = "",
    hd_strategy: HdStrategyOpt = "Crop",
    mesh: MeshOpt = None,
    peer: PeerOpt = None,
    port: PortOpt = None,
    timeout: TimeoutOpt = None,
    no_local: NoLocalOpt = False,
    quality: QualityOpt = None,
    out_format: OutFormatOpt = None,
    recursive: RecursiveOpt = False,
    overwrite: OverwriteOpt = False,
    secret_file: KeyOpt = None,
    config: ConfigOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Inpaint IMAGE where MASK is white; or every image of IMAGE_DIR with its mask into -o OUT_DIR."""

    def body() -> int:
        cfg = _config(
            mesh=mesh,
            peers=tuple(peer or ()),
            port=port,
            secret_file=secret_file,
            config=config,
            log_level=log_level or "warning",
        )
        _setup_logging(cfg.log_level)
        fmt = _submit_checks(priority, hd_strategy, timeout, quality, out_format)
        common: dict[str, Any] = {"model": model, "session": session, "hd_strategy": hd_strategy}
        common["quality"] = quality or 0
        if image.is_dir():
            common["out_format"] = "" if fmt == "same" else fmt
            prio = priority or Priority.BATCH
            return _batch(cfg, image, mask, output, no_local, timeout, common, prio, overwrite, recursive)
        return _submit_one(cfg, image, mask, output, no_local, timeout, common, priority, overwrite)

    code = _guard(body)
    raise typer.Exit(code)


def _submit_checks(
    priority: str | None, hd_strategy: str, timeout: float | None, quality: int | None, out_format: str | None
) -> str:
    """Refuse bad ``submit`` options with one line; returns the batch output format (or "same")."""
    if priority is not None and priority not in tuple(Priority):
        raise InputError(f"--priority must be interactive or batch, not {priority!r}")
    if hd_strategy.lower() not in ("crop", "resize", "original"):
        raise InputError(f"--hd-strategy must be Crop, Resize or Original, not {hd_strategy!r}")
    if timeout is not None and timeout <= 0:
        raise InputError("--timeout must be a positive number of seconds")
    if quality is not None and not 1 <= quality <= 100:
        raise InputError("--quality must be from 1 to 100")
    fmt = (out_format or "same").lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg", "webp", "same"):
        raise InputError(f"--format must be png, jpg, webp or same, not {out_format!r}")
    return fmt


def _submit_one(
    cfg: Config,
    image: Path,
    mask: Path,
    output: Path | None,
    no_local: bool,
    timeout: float | None,
    common: dict[str, Any],
    priority: str | None,
    overwrite: bool,
) -> int:
    """``submit IMAGE MASK``: one task, its warnings, the output written."""
    from mesh.surface.client import Job

    if output is not None and output.is_dir():
        raise InputError(f"-o {output} is a folder; give a file name for a single image")
    if (
        output is not None
        and not overwrite
        and output.exists()
        and output.resolve() in (image.resolve(), mask.resolve())
    ):
        raise InputError(f"-o {output} is an input; give another file name (or --overwrite to replace it)")
    out_fmt = ""
    if output is not None and output.suffix:
        from mesh.execute.header import OUTPUT_FORMATS

        if output.suffix.lower().lstrip(".") not in OUTPUT_FORMATS:
            raise InputError(f"cannot write {output.suffix} files; use .png, .jpg, .webp, .tif or .bmp")
        out_fmt = output.suffix.lower().lstrip(".")
    data = _read(image, "image")
    job = Job(data, _read(mask, "mask"), out_format=out_fmt, priority=priority or Priority.INTERACTIVE,
              label=str(image), pixels=pixels(data), **common)  # fmt: skip

    async def work(client: Client) -> list[JobResult]:
        return await client.run([job], timeout=timeout or const.SUBMIT_TIMEOUT)

    (res,) = _arun(_with_mesh(cfg, no_local, False, work))
    for note in res.notes:
        err.print(f"lamamesh: warning: {note}", markup=False)
    if not res.ok:
        raise _error_of(res)
    dest = output or Path(f"{image.stem}_inpainted{_suffix_for(res.out_format)}")
    if not dest.suffix:
        dest = dest.with_suffix(_suffix_for(res.out_format))
    _write(dest, res.data)
    out.print(f"wrote {dest} ({res.node_id}, {res.slot_ms:.0f} ms in the slot, {res.latency_ms:.0f} ms in all)")
    return 0


def _task_bar() -> Progress | _ProgressLines:
    """The progress of a run of photos (batch submit, demo): count, rate, elapsed, ETA, the last one
    done. On a terminal a live bar; otherwise (a log, a pipe, CI) a line every few seconds."""
    if not err.is_terminal:
        return _ProgressLines()
    return Progress(
        TextColumn("[bold]inpainting"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=err,
    )


class _RateColumn(ProgressColumn):
    """Photos per second (Rich's own speed columns show bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f}/s" if speed else "-/s")


class _ProgressLines:
    """The progress bar's interface for a stderr that is not a terminal: one plain line every
    ``PROGRESS_LINE_EVERY`` seconds (and at the end), with rate and ETA."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.last_line = self.started

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.done:
            self._line()

    def add_task(self, name: str, total: int, **fields: Any) -> TaskID:
        self.total = total
        return TaskID(0)

    def update(self, tid: TaskID, advance: int = 0, **fields: Any) -> None:
        self.done += advance
        now = time.monotonic()
        if now - self.last_line >= const.PROGRESS_LINE_EVERY:
            self.last_line = now
            self._line()

    def _line(self) -> None:
        secs = max(1e-6, time.monotonic() - self.started)
        rate = self.done / secs
        eta = f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.done < self.total else ""
        err.print(f"lamamesh: {self.done} of {self.total} done in {secs:.0f} s ({rate:.2f}/s{eta})", markup=False)


def _error_of(res: JobResult) -> MeshError:
    from mesh.errors import from_code

    return from_code(res.error_code, f"{res.job.label}: {res.error}" if res.job.label else res.error)


def _batch(
    cfg: Config,
    image_dir: Path,
    masks: Path,
    output: Path | None,
    no_local: bool,
    timeout: float | None,
    common: dict[str, Any],
    priority: str,
    overwrite: bool = False,
    recursive: bool = False,
) -> int:
    if output is None:
        raise InputError("a folder of images needs -o OUT_DIR")
    pairs, missing, done_before, total = _plan_batch(image_dir, masks, output, overwrite, recursive)
    output.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    notes: list[str] = []  # the workers' warnings (mask resized, empty, covering most of a photo)
    started = time.monotonic()

    bar = _task_bar()
    tid = bar.add_task("batch", total=len(pairs), last="")

    def skipped(img: Path, why: str) -> None:
        failures.append(f"{img.relative_to(image_dir)}: {why}")
        bar.update(tid, advance=1, last=img.name)

    async def on_result(r: JobResult) -> None:
        notes.extend(f"{r.job.label}: {n}" for n in r.notes)
        if r.ok:
            dest = _output_path(output, Path(r.job.label), _suffix_for(r.out_format))
            await asyncio.to_thread(_write, dest, r.data)
            counts[r.node_id] += 1
        else:
            failures.append(f"{r.job.label}: {r.error}")
        bar.update(tid, advance=1, last=r.job.label)

    async def work(client: Client) -> None:
        with bar:
            jobs = _batch_jobs(pairs, image_dir, masks, priority, common, skipped)
            await client.run(jobs, on_result, timeout=timeout, keep=False)

    try:
        _arun(_with_mesh(cfg, no_local, False, work))
    except KeyboardInterrupt:
        written = len(done_before) + sum(counts.values())
        err.print(
            f"lamamesh: stopped; {written} of {total} written to {output}; run the same command to continue",
            markup=False,
        )
        raise typer.Exit(130) from None
    for line in notes:
        err.print(f"lamamesh: warning: {line}", markup=False)
    for line in failures:
        err.print(f"lamamesh: failed {line}", markup=False)
    extra = [f"{len(done_before)} already there"] if done_before else []
    extra += [f"{len(missing)} skipped (no mask)"] if missing else []
    extra += [f"{len(failures)} failed"] if failures else []
    _batch_summary(counts, len(pairs), output, time.monotonic() - started, extra)
    return 1 if failures else 0


def _batch_jobs(
    pairs: list[tuple[Path, Path]],
    image_dir: Path,
    masks: Path,
    priority: str,
    common: dict[str, Any],
    skipped: Callable[[Path, str], None],
) -> Iterator[Job]:
    """Read each pair only when the client has room for it: a folder of any size holds no more than
    the client's window in memory. An unreadable file is one failure line (``skipped``), not the end.
    One mask for every photo (``masks`` a file) is read once."""
    from mesh.surface.client import Job

    cache: dict[Path, bytes] = {}
    for img, m in pairs:
        try:
            if m not in cache:
                cache[m] = _read(m, "mask")
            data = _read(img, "image")
        except InputError as exc:
            skipped(img, str(exc))
            continue
        label = str(img.relative_to(image_dir))
        yield Job(data, cache.pop(m) if m != masks else cache[m], priority=priority, label=label,
                  pixels=pixels(data), **common)  # fmt: skip


def _batch_summary(counts: Counter[str], todo: int, output: Path, secs: float, extra: list[str]) -> None:
    """The batch's last line: how many, how fast, what else happened, which node did how many."""
    done = sum(counts.values())
    split = ", ".join(f"{n} {k}" for k, n in counts.most_common())
    out.print(
        f"{done} of {todo} inpainted into {output} in {secs:.1f} s ({done / secs:.2f}/s)"
        + (f"; {', '.join(extra)}" if extra else "")
        + f"; by node: {split or '-'}"
    )


def _plan_batch(
    image_dir: Path, masks: Path, output: Path, overwrite: bool, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[Path], list[tuple[Path, Path]], int]:
    """(pairs to do, images with no mask, pairs done by an earlier run, pairs in all); refuses an
    output folder that is an input and says what it skips and why."""
    if output.exists() and not output.is_dir():
        raise InputError(f"-o {output} is a file; a batch writes into a folder")
    if not overwrite and output.resolve() in (image_dir.resolve(), masks.resolve()):
        raise InputError(f"-o {output} is an input folder: its photos would be replaced (give another folder)")
    _remove_parts(output)
    pairs, missing = _pair_batch(image_dir, masks, recursive, output)
    for p in missing:
        where = p.relative_to(image_dir)
        err.print(f"lamamesh: skipping {where}: no mask with the stem {p.stem!r} in {masks}", markup=False)
    subdirs = [] if recursive else sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    if subdirs:
        shown = ", ".join(subdirs[:5]) + (f" and {len(subdirs) - 5} more" if len(subdirs) > 5 else "")
        err.print(f"lamamesh: subfolders are not processed (--recursive does): {shown}", markup=False)
    if not pairs and not missing:
        raise InputError(f"{image_dir} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not pairs:
        raise InputError(f"no image in {image_dir} has a matching mask in {masks}")
    total = len(pairs)
    done_before = [] if overwrite else [p for p in pairs if _output_of(output, p[0].relative_to(image_dir))]
    if done_before:
        pairs = [p for p in pairs if _output_of(output, p[0].relative_to(image_dir)) is None]
        err.print(
            f"lamamesh: {len(done_before)} of {total} already in {output} (skipped; --overwrite redoes them)",
            markup=False,
        )
    return pairs, missing, done_before, total


def _output_path(folder: Path, rel: Path, suffix: str) -> Path:
    """Where the output of the image at ``rel`` (relative to the input folder) goes: the same place
    under ``folder``, the input's stem, the output format's suffix."""
    return folder / rel.parent / (rel.stem + suffix)


def _output_of(folder: Path, rel: Path) -> Path | None:
    """The finished output of the image at ``rel`` in ``folder``, if there is one (outputs are
    written atomically, so one that exists is complete)."""
    for suffix in (".png", ".jpg", ".webp", ".tif", ".bmp"):
        p = _output_path(folder, rel, suffix)
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------------------
# status


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one snapshot as JSON and exit.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot as a table and exit.")] = False,
    mesh: MeshOpt = None,
    peer: PeerOpt = None,
    port: PortOpt = None,
    secret_file: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Watch the mesh live (q quits): nodes, leader and term, totals, recent tasks."""

    def body() -> None:
        cfg = _config(mesh=mesh, peers=tuple(peer or ()), port=port, secret_file=secret_file, config=config)
        live = not as_json and not once and sys.stdout.isatty()

        async def work(client: Client) -> Snapshot | None:
            if live:
                from mesh.surface.tui import StatusApp

                await StatusApp(client.snapshot).run_async()
                return None
            return await client.snapshot()

        snap = _arun(_with_mesh(cfg, None, True, work))
        if snap is None:
            return
        if as_json:
            out.print(json.dumps(snap.to_json(), indent=2), markup=False)
        else:
            _print_snapshot(snap)

    _guard(body)


def _print_snapshot(snap: Snapshot) -> None:
    out.print(summary(snap))
    table = Table()
    for col in NODE_COLUMNS:
        table.add_column(col)
    for n in snap.nodes:
        table.add_row(*node_cells(n))
    out.print(table)


# ---------------------------------------------------------------------------------------
# demo


@app.command()
def demo(
    nodes: Annotated[int, typer.Option("--nodes", help="Node processes to start on this machine.")] = 3,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the results and node logs.")] = Path(
        "lamamesh-demo"
    ),
    copies: Annotated[int, typer.Option("--copies", help="Times each sample is inpainted (more work to spread).")] = 1,
) -> None:
    """Start a small mesh of local nodes, inpaint the bundled samples through it, shut it down."""

    def body() -> None:
        if not 1 <= nodes <= 16:
            raise InputError("--nodes must be between 1 and 16")
        if not 1 <= copies <= 100:
            raise InputError("--copies must be between 1 and 100")
        if output.exists() and not output.is_dir():
            raise InputError(f"-o {output} is a file; give a folder")
        from mesh.surface.demo import local_mesh

        todo = _demo_jobs(copies)
        results = output / "results"
        results.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with local_mesh(nodes, output / "logs") as procs:
            err.print(f"lamamesh demo: starting {nodes} nodes on 127.0.0.1 (logs in {output}/logs)", markup=False)
            got, secs = _arun(_demo_run(procs, todo, results, started))
            err.print("lamamesh demo: stopping the nodes", markup=False)
        _demo_report(got, len(todo), results, secs)

    _guard(body)


def _demo_jobs(copies: int) -> list[Job]:
    """The bundled samples, ``copies`` times each."""
    from mesh.execute.models import data_dir
    from mesh.surface.client import Job

    src = data_dir() / "samples"
    pairs = [(p, src / "masks" / f"{p.stem}.png") for p in sorted((src / "images").iterdir())]
    return [
        Job(
            p.read_bytes(),
            m.read_bytes(),
            priority=Priority.BATCH,
            label=f"{p.stem}-{k + 1}" if copies > 1 else p.stem,
            pixels=pixels(p.read_bytes()),
        )
        for k in range(copies)
        for p, m in pairs
    ]


async def _demo_run(procs: Any, todo: list[Job], results: Path, started: float) -> tuple[list[JobResult], float]:
    """Wait for the demo's nodes, send every photo through them with a progress bar, write the results."""
    from mesh.surface.demo import wait_ready

    client, ctx, snap = await wait_ready(procs)
    try:
        up = time.monotonic() - started
        err.print(
            f"lamamesh demo: {len(snap.nodes)} nodes up in {up:.1f} s, leader {snap.leader} "
            f"(term {snap.term}); inpainting {len(todo)} photos",
            markup=False,
        )
        t0 = time.monotonic()
        with _task_bar() as bar:
            tid = bar.add_task("demo", total=len(todo), last="")

            def on_result(r: JobResult) -> None:
                if r.ok:
                    _write(results / f"{r.job.label}{_suffix_for(r.out_format)}", r.data)
                where = r.node_id if r.ok else f"FAILED: {r.error}"
                bar.update(tid, advance=1, last=f"{r.job.label} <- {where}")

            got = await client.run(todo, on_result, timeout=600)
        return got, time.monotonic() - t0
    finally:
        client.close()
        ctx.close()


def _demo_report(got: list[JobResult], total: int, results: Path, secs: float) -> None:
    """Who did what, the failures, and the one-line summary; raises when any task failed."""
    table = Table(title="who did what")
    for col in ("node", "photos", "mean ms in the slot"):
        table.add_column(col)
    by_node: dict[str, list[float]] = {}
    for r in got:
        if r.ok:
            by_node.setdefault(r.node_id, []).append(r.slot_ms)
    for node_id, ms in sorted(by_node.items()):
        table.add_row(node_id, str(len(ms)), f"{sum(ms) / len(ms):.0f}")
    out.print(table)
    failed = [r for r in got if not r.ok]
    for r in failed:
        err.print(f"lamamesh: failed {r.job.label}: {r.error}", markup=False)
    out.print(f"{total - len(failed)} of {total} photos inpainted in {secs:.1f} s; results in {results}/")
    if failed:
        raise TaskFailed(f"{len(failed)} of {total} demo tasks failed")


# ---------------------------------------------------------------------------------------
# doctor


@app.command()
def doctor(
    mesh: MeshOpt = None,
    peer: PeerOpt = None,
    port: PortOpt = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Interface address a node would listen on.")] = None,
    home: Annotated[Path | None, typer.Option("--home", help="Where models are kept (LAMAMESH_HOME).")] = None,
    secret_file: KeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check this machine (ONNX Runtime, CUDA, GPU, ports, multicast, models) and, if a mesh is
    reachable, round-trip one task through it. One line per check; exit 1 if any fails."""
    from mesh.surface.client import Job
    from mesh.surface.doctor import Check, machine_checks, probe_images

    def body() -> int:
        cfg = _config(
            mesh=mesh, peers=tuple(peer or ()), port=port, bind=bind, home=home, secret_file=secret_file, config=config
        )
        checks: list[Check] = []

        def show(c: Check) -> None:
            checks.append(c)
            style = {"ok": "green", "warn": "yellow", "fail": "bold red"}[c.state]
            out.print(f"[{style}]{c.state.upper():<4}[/]  {c.line()[6:]}")

        for c in machine_checks(cfg.bind, cfg.port or const.DEFAULT_TASK_PORT, cfg.home):
            show(c)
        image, mask_png = probe_images()

        async def work(client: Client) -> Check:
            snap = await client.snapshot()
            alive = snap.totals.nodes
            (r,) = await client.run([Job(image, mask_png, label="doctor", pixels=128 * 96)], timeout=60)
            where = f"mesh {snap.mesh!r}: {alive} nodes, leader {snap.leader} (term {snap.term})"
            if not r.ok:
                return Check("mesh", "fail", f"{where}; the test task failed: {r.error}", "see that node's log")
            return Check(
                "mesh",
                "ok",
                f"{where}; one task round-tripped via {r.node_id} in {r.latency_ms:.0f} ms "
                f"({r.slot_ms:.0f} ms in the slot)",
            )

        try:
            show(_arun(_with_mesh(cfg, None, True, work)))
        except NoMesh as exc:
            show(Check("mesh", "warn", f"none reachable ({exc})", "start one with lamamesh join, or give --peer"))
        return 1 if any(c.state == "fail" for c in checks) else 0

    raise typer.Exit(_guard(body))


# ---------------------------------------------------------------------------------------
# keygen


@app.command()
def keygen(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the key here (mode 600).")] = None,
) -> None:
    """Print a new mesh key: give the file to every node and client (--secret-file)."""

    def body() -> None:
        from mesh.wire.transport import new_key_text

        text = new_key_text()
        if output is None:
            sys.stdout.write(text)
            return
        if output.exists():
            raise InputError(f"{output} exists; a new key would lock out the nodes that use it")
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        out.print(f"wrote a new mesh key to {output}; copy it to every machine and use --secret-file {output}")

    _guard(body)


# ---------------------------------------------------------------------------------------
# samples


@app.command()
def samples(
    dest: Annotated[Path, typer.Argument(help="Folder to write images/ and masks/ into.")] = Path("lamamesh-samples"),
) -> None:
    """Copy the bundled sample photos (public domain / CC0) and their masks into DEST."""
    import shutil

    from mesh.execute.models import data_dir

    def body() -> None:
        src = data_dir() / "samples"
        if dest.exists() and not dest.is_dir():
            raise InputError(f"{dest} is a file; give a folder")
        for sub in ("images", "masks"):
            (dest / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / sub).iterdir()):
                shutil.copyfile(f, dest / sub / f.name)
        shutil.copyfile(src / "NOTICE.md", dest / "NOTICE.md")
        n = len(list((src / "images").iterdir()))
        out.print(f"wrote {n} photos to {dest}/images and their masks to {dest}/masks")
        out.print(f"next: lamamesh submit {dest}/images {dest}/masks -o {dest}/results")

    _guard(body)


# ---------------------------------------------------------------------------------------
# models

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Where models are kept (LAMAMESH_HOME).")]


@models_app.command("list")
def models_list(home: HomeOpt = None, config: ConfigOpt = None) -> None:
    """Every model this machine knows, whether its file is here, and its contract."""

    def body() -> None:
        cfg = _config(home=home, config=config)
        table = Table()
        for col in ("name", "here", "input", "channels", "output", "sha256", "description"):
            table.add_column(col, overflow="fold")
        for e in Registry(cfg.home).entries():
            s = e.spec
            shape = f"{s.size}x{s.size}" if s.size else f"any (x{s.multiple})"
            table.add_row(
                s.name,
                "yes" if e.path else "no",
                shape,
                s.channels,
                f"0..{s.output_range:g}",
                (s.sha256 or "-")[:12],
                s.description,
            )
        out.print(table)

    _guard(body)


@models_app.command("add")
def models_add(
    path: Annotated[Path, typer.Argument(help="An ONNX file you copied here.")],
    name: Annotated[str | None, typer.Option("--name", help="Name to register it under.")] = None,
    like: Annotated[
        str | None, typer.Option("--like", help="Take the contract of this manifest model (e.g. lama-opencv).")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", help="Fixed input size (0 = any size).")] = None,
    channels: Annotated[str | None, typer.Option("--channels", help="rgb or bgr.")] = None,
    output_range: Annotated[float | None, typer.Option("--output-range", help="1 or 255.")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a model file (a LaMa ONNX export is recognised by its checksum)."""
    from mesh.execute import engine

    def body() -> None:
        cfg = _config(home=home, config=config)
        if not path.is_file():
            raise InputError(f"{path} does not exist or is not a file")
        shapes = engine.input_shapes(path)
        spec = Registry(cfg.home).add(path, name, like, size, channels, output_range, shapes)
        shape = f"{spec.size}x{spec.size}" if spec.size else "any size"
        contract = f"{shape}, {spec.channels}, output 0..{spec.output_range:g}"
        out.print(f"added model {spec.name!r} ({contract}, sha256 {spec.sha256})")

    _guard(body)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="A model of the manifest (lamamesh models list), or a new name.")],
    url: Annotated[str | None, typer.Option("--url", help="Download from here instead (a mirror, a LAN copy).")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected checksum (needed for a new name).")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download a model with a progress bar and check its sha256; a wrong checksum keeps nothing."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from mesh.execute.models import download

    def body() -> None:
        cfg = _config(home=home, config=config)
        reg = Registry(cfg.home)
        known = {e.spec.name: e.spec for e in reg.entries()}
        spec = known.get(name)
        if sha256 is not None and len(sha256) != 64:
            raise InputError("--sha256 must be 64 hex digits")
        if spec is None and not (url and sha256):
            raise InputError(f"unknown model {name!r}; give --url and --sha256 to fetch a new one")
        if spec is not None and sha256 and spec.sha256 and sha256.lower() != spec.sha256:
            raise InputError(f"--sha256 differs from the manifest's checksum of {name!r} ({spec.sha256})")
        if spec is not None and spec.builtin:
            raise InputError(f"model {name!r} ships inside lamamesh; there is nothing to fetch")
        source = url or (spec.url if spec is not None else None)
        if not source:
            raise InputError(f"no download address is known for {name!r}; give --url")
        with Progress(
            TextColumn(f"[bold]{name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err
        ) as bar:
            tid = bar.add_task("fetch", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(tid, completed=done, total=total)

            def fetch(dest: Path, expect: str | None) -> str:
                return download(source, dest, expect or (sha256.lower() if sha256 else None), progress)

            if spec is not None:
                got = reg.place(name, fetch)
            else:
                from mesh.execute import engine

                tmp = reg.models_dir / f".{name}.fetched"
                try:
                    fetch(tmp, None)
                    got = reg.add(tmp, name=name, shapes=engine.input_shapes(tmp))
                finally:
                    tmp.unlink(missing_ok=True)
        out.print(f"fetched model {got.name!r} into {reg.models_dir} (sha256 {got.sha256})")

    _guard(body)


def main() -> None:
    malloc.keep_freed_memory()  # this process's allocator only: see mesh/malloc.py
    app()


if __name__ == "__main__":
    main()
