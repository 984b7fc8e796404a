"""The wire format: every message a frozen record, msgpack-encoded with ``v`` and ``t``.

A message travels as ZeroMQ frames ``[header, *blobs]``: the header is the msgpack
map, the blobs (image bytes) are separate frames that are never put inside msgpack
and never decoded by the leader. ``decode`` never trusts its input: anything
malformed, oversized, of the wrong shape or of another protocol version raises
``ProtocolError``/``VersionMismatch``, which the receive loops count and drop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from mesh import const
from mesh.errors import ProtocolError, VersionMismatch
from mesh.kinds import Priority, Role

log = logging.getLogger("lamamesh.protocol")


@dataclass(frozen=True)
class Message:
    t: ClassVar[str] = ""
    blobs: ClassVar[int] = 0  # how many data frames follow the header


@dataclass(frozen=True)
class Ping(Message):
    """client or node -> a node's task port. A node fills in its own gossip endpoint so the
    node it pings (a static ``--peer``) can subscribe back; a client leaves them empty."""

    t: ClassVar[str] = "ping"
    nonce: int = 0
    node_id: str = ""
    host: str = ""
    gossip_port: int = 0
    mesh: str = ""


@dataclass(frozen=True, kw_only=True)
class Pong(Message):
    t: ClassVar[str] = "pong"
    nonce: int = 0
    node_id: str = ""
    mesh: str = ""
    leader_id: str = ""
    leader_addr: str = ""  # host:task_port of the leader ("" while none is elected)
    term: int = 0
    host: str = ""  # the answering node's advertised address and ports
    gossip_port: int = 0
    backend_port: int = 0
    members: tuple[str, ...] = ()  # host:task_port of every live member


@dataclass(frozen=True)
class TaskSpec(Message):
    """What to do with one image: the fields shared by Submit (client) and Task (leader)."""

    task_id: str = ""
    model: str = "builtin"
    priority: str = Priority.INTERACTIVE  # interactive | batch
    session: str = ""
    out_format: str = ""  # "" = the input's format
    hd_strategy: str = "Crop"
    crop_margin: int = const.HD_CROP_MARGIN
    crop_trigger: int = const.HD_CROP_TRIGGER
    resize_limit: int = const.HD_RESIZE_LIMIT
    pixels: int = 0  # width x height, read by the client from the image header (0 = unknown)
    requires: str = ""  # requirement class: "" any node, cpu, gpu-low, gpu-medium, gpu-high
    size: int = 0  # bytes of image + mask: placement counts the time to move them
    quality: int = 0  # JPEG output quality 1-100; 0 = the input's (estimated from its tables), else 95


@dataclass(frozen=True)
class Submit(TaskSpec):
    """client -> leader: place this task. No data frames: the bytes go to the worker the leader names.
    ``ticket``: the client sent the bytes already, with ``Direct``, to the worker a ticket named."""

    t: ClassVar[str] = "submit"
    ticket: str = ""


@dataclass(frozen=True)
class Task(TaskSpec):
    """leader -> worker: hold a slot for this task; its bytes come from the client (``Data``)."""

    t: ClassVar[str] = "task"
    attempt: int = 0
    deadline_s: float = 0.0  # the leader re-places it elsewhere after this long; a slot running it longer is hung
    # a ticket hold (``task_id`` empty): keep a slot for the client's next task, which comes as a
    # ``Direct`` naming this ticket within ``ttl_s``; ``deadline_s`` is then that task's deadline
    ticket: str = ""
    ttl_s: float = 0.0


@dataclass(frozen=True)
class Place(Message):
    """leader -> client: send the task's bytes to the node at ``addr`` (host:task_port). Or, with
    ``ticket`` and no ``task_id``: the next task of ``model`` and ``requires`` this client submits may go
    straight there within ``ttl_s`` (``Direct`` with the ticket; ``Submit`` with it to the leader)."""

    t: ClassVar[str] = "place"
    task_id: str = ""
    node_id: str = ""
    addr: str = ""
    attempt: int = 0
    ticket: str = ""
    model: str = ""
    requires: str = ""
    ttl_s: float = 0.0


@dataclass(frozen=True)
class Direct(TaskSpec):
    """client -> the worker a ticket names, at its task port: run this task in the slot held for the
    ticket; frames: image, mask. Answered like ``Data`` (``Result`` on the same connection); one whose
    ticket the worker does not hold (yet) is kept like early bytes, and unclaimed answered ``retry`` (the
    client then submits it plainly). No ``task_id`` and no frames: the client is done and lets the
    ticket go (its slot is free at once). ``submit``: sent to the leader's own node on the client's
    connection to the leader, it is the task's ``Submit`` too (one message for a lone task, not two)."""

    t: ClassVar[str] = "direct"
    blobs: ClassVar[int] = 2
    ticket: str = ""
    submit: bool = False


@dataclass(frozen=True)
class Data(Message):
    """client -> the worker named by ``Place``, at its task port; frames: image, mask. The worker
    answers the client with ``Result`` on the same connection. ``withdrawn`` (no frames): the client
    has this task's answer already (it ran elsewhere, e.g. across a leader change), so the worker
    frees the slot it holds for it at once and tells the leader, which drops the task."""

    t: ClassVar[str] = "data"
    blobs: ClassVar[int] = 2
    task_id: str = ""
    attempt: int = 0
    withdrawn: bool = False


@dataclass(frozen=True)
class Outcome(Message):
    task_id: str = ""
    ok: bool = False
    error_code: str = ""
    error: str = ""
    node_id: str = ""  # the node whose slot ran it
    out_format: str = ""
    model_ms: float = 0.0  # time inside the slot (decode + model + encode)
    notes: tuple[str, ...] = ()  # one line each the user should read (mask resized, mask empty ...)


@dataclass(frozen=True)
class Done(Outcome):
    """worker -> leader: a task held for it is over (ran, failed, or its bytes never came). No data
    frames: the result went to the client directly."""

    t: ClassVar[str] = "done"
    fetch_ms: float = 0.0  # from the slot being held to the bytes being here
    size: int = 0  # bytes that came (image + mask); 0: nothing to learn about moving them
    ticket: str = ""  # the ticket the task came by; with no task_id: that ticket's hold expired unused


@dataclass(frozen=True)
class Result(Outcome):
    """worker -> client (the answer), or leader -> client (refused, ``moved``); frames: result image
    (none when not ok)."""

    t: ClassVar[str] = "result"
    blobs: ClassVar[int] = 1


@dataclass(frozen=True)
class Ready(Message):
    """worker -> leader: I can take ``credits`` more tasks (credit-based flow control)."""

    t: ClassVar[str] = "ready"
    node_id: str = ""
    credits: int = 0
    slots: int = 0
    provider: str = ""
    host: str = ""
    vram_mb: int = 0
    models: tuple[str, ...] = ()
    task_port: int = 0  # where clients send it the bytes of the tasks placed on it (at ``host``)
    # its own slots' times so far, EWMA per "model@size-class": a new leader places by them at once
    measured: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Heartbeat(Message):
    """Published by every node on its gossip PUB socket every ``heartbeat_interval``: who it
    is, where it listens, whom it follows, what it can do and how busy it is."""

    t: ClassVar[str] = "hb"
    node_id: str = ""
    incarnation: int = 0  # start time in ns: a restarted node at the same address has a larger one
    mesh: str = ""
    host: str = ""
    task_port: int = 0
    backend_port: int = 0
    gossip_port: int = 0
    term: int = 0  # the term of the leader it follows (or of its own claim)
    leader: str = ""  # node id of the leader it follows; its own id when it leads; "" while none
    leaving: bool = False  # a graceful leave has begun: not a candidate, takes no new work
    seq: int = 0
    # capabilities
    provider: str = ""  # cpu | cuda
    gpu: str = ""
    gpus: tuple[str, ...] = ()  # "index: name (MiB)" of each GPU it runs a slot on
    vram_mb: int = 0
    cores: int = 0
    ram_mb: int = 0
    slots: int = 0
    models: tuple[str, ...] = ()
    # load
    queued: int = 0  # tasks waiting in its leader queue (leader only)
    running: int = 0  # tasks its slots hold
    done: int = 0
    failed: int = 0
    vram_free_mb: int = 0
    cpu_percent: float = 0.0
    ewma_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # per "model@size-class"
    rate: float = 0.0  # tasks/s it finished over the last minute
    dropped: int = 0  # messages it dropped undecoded plus handshakes it refused, since it started
    workers: tuple[str, ...] = ()  # leader only: node ids of its registered workers
    # gossip of membership: gossip endpoints "node_id@host:gossip_port" of the live members it knows
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bye(Message):
    """worker -> leader: I am leaving; re-queue what I hold."""

    t: ClassVar[str] = "bye"
    node_id: str = ""


@dataclass(frozen=True)
class Cancel(Message):
    """client -> leader: drop every task of mine you hold (the client stops: Ctrl-C, an error)."""

    t: ClassVar[str] = "cancel"


# ---- one row of Status.nodes: built by the node, read back by every surface ----


def as_int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def as_float(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def as_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


@dataclass(frozen=True, kw_only=True)
class NodeRow:
    """One member of the mesh as the answering leader sees it: the node builds these for ``Status``
    (``to_wire``: a plain map in the message), and every surface reads them back with ``parse``,
    which never trusts the shape: a field of the wrong type reads as empty, never as a crash."""

    id: str
    host: str = ""
    port: int = 0
    role: str = Role.WORKER  # leader | worker | leaving | left | dead
    alive: bool = False
    leaving: bool = False  # said it is leaving (or, once not alive, that it left)
    provider: str = ""
    gpu: str = ""
    gpus: tuple[str, ...] = ()  # "index: name (MiB)" of each GPU it runs a slot on
    vram_mb: int = 0
    cores: int = 0
    slots: int = 0
    busy: int = 0
    queued: int = 0
    done: int = 0
    failed: int = 0
    rate: float = 0.0  # tasks/s over the last minute
    cpu_percent: float = 0.0
    ewma_ms: tuple[tuple[str, float], ...] = ()  # (model@size-class, ms) as the leader measured it
    models: tuple[str, ...] = ()
    last_heard_s: float = 0.0
    ready: bool = False  # its slots are up and it is registered with the leader (takes work)
    dropped: int = 0  # bad messages dropped and handshakes refused since it started
    term: int = 0

    def to_wire(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row.update(ewma_ms=dict(self.ewma_ms), models=list(self.models), gpus=list(self.gpus))
        return row

    @classmethod
    def parse(cls, d: dict[str, Any], leader: str) -> NodeRow:
        alive = d.get("alive") is True
        leaving = d.get("leaving") is True
        node_id = as_str(d, "id")
        if not alive:
            role = Role.LEFT if leaving else Role.DEAD
        else:
            role = Role.LEAVING if leaving else Role.LEADER if node_id == leader else Role.WORKER
        ewma = d.get("ewma_ms")
        return cls(
            id=node_id,
            host=as_str(d, "host"),
            port=as_int(d, "port"),
            role=role,
            alive=alive,
            leaving=leaving,
            provider=as_str(d, "provider"),
            gpu=as_str(d, "gpu"),
            gpus=_strings(d.get("gpus")),
            vram_mb=as_int(d, "vram_mb"),
            cores=as_int(d, "cores"),
            slots=as_int(d, "slots"),
            busy=as_int(d, "busy"),
            queued=as_int(d, "queued"),
            done=as_int(d, "done"),
            failed=as_int(d, "failed"),
            rate=as_float(d, "rate"),
            cpu_percent=as_float(d, "cpu_percent"),
            ewma_ms=tuple(
                sorted(
                    (k, float(v))
                    for k, v in ewma.items()
                    if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                )
            )
            if isinstance(ewma, dict)
            else (),
            models=_strings(d.get("models")),
            last_heard_s=as_float(d, "last_heard_s"),
            ready=d.get("ready") is True,
            dropped=as_int(d, "dropped"),
            term=as_int(d, "term"),
        )


def _strings(v: Any) -> tuple[str, ...]:
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list | tuple) else ()


@dataclass(frozen=True)
class StatusRequest(Message):
    t: ClassVar[str] = "status?"


@dataclass(frozen=True)
class Status(Message):
    """A snapshot of the mesh as its leader sees it (``lamamesh status --json``)."""

    t: ClassVar[str] = "status"
    mesh: str = ""
    leader: str = ""
    term: int = 0
    nodes: tuple[dict[str, Any], ...] = ()
    queued: int = 0
    done: int = 0
    failed: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)  # tasks answered by this leader, by outcome
    recent: tuple[dict[str, Any], ...] = ()  # its latest outcomes, oldest first
    node_id: str = ""  # the node that answered
    omitted: int = 0  # node rows left out to keep the answer under the header limit (dead ones first)


@dataclass(frozen=True)
class ModelWant(Message):
    """node -> a peer's task port: send me ``length`` bytes of model ``name`` from ``offset``."""

    t: ClassVar[str] = "model?"
    name: str = ""
    sha256: str = ""  # the checksum the asker expects ("" = whatever the peer holds)
    offset: int = 0
    length: int = 0


@dataclass(frozen=True)
class ModelPart(Message):
    """peer -> node: one chunk of a model file (the data frame), or why not (``error``)."""

    t: ClassVar[str] = "model"
    blobs: ClassVar[int] = 1
    name: str = ""
    sha256: str = ""  # of the whole file the peer holds
    offset: int = 0
    total: int = 0  # bytes of the whole file
    error: str = ""
    node_id: str = ""


MOVED = "moved"  # error code of a Result that is not an answer: resubmit to the leader named in `error`
RETRY = "retry"  # error code of a worker's Result that is not an answer: submit the task to the leader again
NO_DATA = "no_data"  # error code of a worker's Done: the slot was held but the task's bytes never came
HUNG = "hung"  # error code of a worker's Done: its slot ran the task past its deadline and was restarted
WITHDRAWN = "withdrawn"  # error code of a worker's Done: the client withdrew the task (it has its answer)


def task_of(spec: Submit | Direct, *, deadline_s: float = 0.0, ticket: str = "") -> Task:
    """The ``Task`` a worker runs for a client's ``Submit`` (the leader's copy) or ``Direct`` (the
    worker's, under a ticket): the same fields, attempt 0. Copied by its dict rather than through
    ``__init__`` (a dozen keyword fields): this runs per task."""
    task = Task.__new__(Task)
    fields = task.__dict__
    fields.update(spec.__dict__)
    fields["attempt"], fields["deadline_s"], fields["ticket"], fields["ttl_s"] = 0, deadline_s, ticket, 0.0
    fields.pop("submit", None)  # a Direct's: not a Task field
    return task


def submit_of(direct: Direct) -> Submit:
    """The ``Submit`` a ``Direct`` with ``submit`` stands for (same fields, its ticket; see ``task_of``)."""
    msg = Submit.__new__(Submit)
    fields = msg.__dict__
    fields.update(direct.__dict__)
    del fields["submit"]
    return msg


MESSAGES: dict[str, type[Message]] = {
    cls.t: cls
    for cls in (
        Ping,
        Pong,
        Submit,
        Task,
        Place,
        Direct,
        Data,
        Done,
        Result,
        Ready,
        Heartbeat,
        Bye,
        Cancel,
        StatusRequest,
        Status,
        ModelWant,
        ModelPart,
    )
}

# how each field of a message type is checked, worked out once per type from its type hints:
# (name, the type isinstance must accept, what else to check)
_PLAIN, _FLOAT, _INT, _STR_LIST, _NUM_MAP = range(5)
_CHECKS: dict[type[Message], tuple[tuple[str, Any, int], ...]] = {}


def _field_checks(cls: type[Message]) -> tuple[tuple[str, Any, int], ...]:
    got = _CHECKS.get(cls)
    if got is None:
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            origin = typing.get_origin(hint) or hint
            args = typing.get_args(hint)
            if hint is float:
                kind = _FLOAT
            elif hint is int:
                kind = _INT
            elif origin is tuple and args == (str, ...):
                kind = _STR_LIST
            elif origin is dict and args == (str, float):
                kind = _NUM_MAP
            else:
                kind = _PLAIN
            rows.append((f.name, origin, kind))
        got = _CHECKS[cls] = tuple(rows)
    return got


def _check(name: str, value: Any, origin: Any, kind: int) -> Any:
    if kind == _FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == _INT and isinstance(value, bool):
        raise ProtocolError(f"field {name!r} should be int, got bool")
    if origin is tuple and isinstance(value, list):  # msgpack arrays arrive as lists; messages hold tuples
        value = tuple(value)
    if not isinstance(value, origin):
        raise ProtocolError(
            f"field {name!r} should be {getattr(origin, '__name__', origin)}, got {type(value).__name__}"
        )
    if kind == _STR_LIST:
        if len(value) > const.MAX_LIST_ITEMS or not all(isinstance(x, str) for x in value):
            raise ProtocolError(f"field {name!r} should be a list of at most {const.MAX_LIST_ITEMS} strings")
    elif kind == _NUM_MAP:
        if len(value) > const.MAX_LIST_ITEMS or not all(
            isinstance(k, str) and isinstance(x, int | float) and not isinstance(x, bool) for k, x in value.items()
        ):
            raise ProtocolError(f"field {name!r} should be a map of at most {const.MAX_LIST_ITEMS} numbers")
        value = {k: float(x) for k, x in value.items()}
    return value


_NAMES: dict[type[Message], tuple[str, ...]] = {}


def _body(msg: Message) -> dict[str, Any]:
    cls = type(msg)
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    body: dict[str, Any] = {"v": const.PROTOCOL_VERSION, "t": msg.t}
    for name in names:
        body[name] = getattr(msg, name)
    return body


def encode(msg: Message) -> bytes:
    """The header frame. Fields are read shallowly (no deep copy as ``dataclasses.asdict`` makes):
    this runs for every task, twice on the leader."""
    data: bytes = msgpack.packb(_body(msg), use_bin_type=True)
    return data


def encode_bundle(msgs: Sequence[Message]) -> bytes:
    """Several messages for one peer as one header frame (a msgpack array of their maps): one ZeroMQ
    message to send, wake for and read instead of several. One message is encoded alone.
    ``BUNDLE_MAX`` at most; only the last may carry data frames (they follow the header frame)."""
    if len(msgs) == 1:
        return encode(msgs[0])
    assert 0 < len(msgs) <= const.BUNDLE_MAX and all(m.blobs == 0 for m in msgs[:-1]), "not a bundle"
    data: bytes = msgpack.packb([_body(m) for m in msgs], use_bin_type=True)
    return data


def decode(data: bytes | memoryview) -> Message:
    """Decode one header frame. Raises ``ProtocolError`` (never anything else) on bad input."""
    body = _unpack(data)
    if not isinstance(body, dict):
        raise ProtocolError(f"header is a {type(body).__name__}, not a map")
    return _message(body)


def decode_bundle(data: bytes | memoryview) -> list[Message]:
    """Decode a header frame that is one message or a bundle of them (see ``encode_bundle``)."""
    body = _unpack(data)
    if isinstance(body, dict):
        return [_message(body)]
    if not isinstance(body, list):
        raise ProtocolError(f"header is a {type(body).__name__}, not a map")
    if not 1 < len(body) <= const.BUNDLE_MAX:
        raise ProtocolError(f"a bundle of {len(body)} messages; 2 to {const.BUNDLE_MAX} may come as one")
    out = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise ProtocolError(f"a bundle holds a {type(item).__name__}, not a map")
        msg = _message(item)
        if msg.blobs and i < len(body) - 1:
            raise ProtocolError(f"{msg.t} carries data frames: in a bundle it comes last")
        out.append(msg)
    return out


def _unpack(data: bytes | memoryview) -> Any:
    if len(data) > const.MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(data)} bytes is over the limit of {const.MAX_HEADER_BYTES}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as exc:  # msgpack raises several types on garbage
        raise ProtocolError(f"not msgpack: {type(exc).__name__}") from None


def _message(body: dict[str, Any]) -> Message:
    v = body.get("v")
    if v != const.PROTOCOL_VERSION:
        raise VersionMismatch(f"protocol version {v!r} refused; this node speaks version {const.PROTOCOL_VERSION}")
    cls = MESSAGES.get(body.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {body.get('t')!r}")
    kwargs = {}
    for name, origin, kind in _field_checks(cls):
        if name in body:
            value = body[name]
            # the common case, a value of exactly the field's type (str, bytes, a non-bool int...),
            # needs no more: bool never passes for int here, lists and maps are looked into below
            kwargs[name] = value if type(value) is origin and kind < _STR_LIST else _check(name, value, origin, kind)
    msg = cls(**kwargs)
    _sane(msg)
    return msg


_PORT_FIELDS = ("task_port", "backend_port", "gossip_port")
MAX_TERM = 2**31  # terms grow by one per election: a larger one is garbage (or an attack without the key)


def _sane(msg: Message) -> None:
    """Values no real peer sends: refused like malformed input, so they never reach the logic."""
    for name in _PORT_FIELDS:
        v = getattr(msg, name, 0)
        if not 0 <= v <= 65535:
            raise ProtocolError(f"{msg.t}: {name} {v} is not a port")
    if not 0 <= getattr(msg, "term", 0) <= MAX_TERM:
        raise ProtocolError(f"{msg.t}: term {getattr(msg, 'term', 0)} is out of range")
    if isinstance(msg, Heartbeat) and not (msg.node_id and msg.host and 0 < len(msg.node_id) <= 128):
        raise ProtocolError("heartbeat without a node id or host")
    if isinstance(msg, Ready) and not (0 <= msg.credits <= 65536 and 0 <= msg.slots <= 1024):
        raise ProtocolError(f"ready: credits {msg.credits} / slots {msg.slots} out of range")


def decode_frames(
    frames: list[bytes] | list[memoryview], max_frame: int = const.MAX_FRAME_BYTES
) -> list[tuple[Message, list[Any]]]:
    """Decode ``[header, *blobs]``, or a bundle ``[header]`` of several messages without blobs;
    checks the frame count and each blob's size."""
    if not frames:
        raise ProtocolError("empty message")
    if len(frames) > const.MAX_FRAMES:
        raise ProtocolError(f"{len(frames)} frames, over the limit of {const.MAX_FRAMES}")
    msgs = decode_bundle(frames[0])
    blobs = list(frames[1:])
    if len(blobs) > msgs[-1].blobs:  # the frames are the last message's (a bundle's others carry none)
        raise ProtocolError(f"{msgs[-1].t} carries {len(blobs)} data frames, expected at most {msgs[-1].blobs}")
    for b in blobs:
        if len(b) > max_frame:
            raise ProtocolError(f"data frame of {len(b)} bytes is over the limit of {max_frame}")
    if len(msgs) > 1:
        return [*((m, []) for m in msgs[:-1]), (msgs[-1], blobs)]
    return [(msgs[0], blobs)]


class BadMessages:
    """Counts dropped messages and logs each peer's first one, then once a minute at most."""

    def __init__(self, interval: float = const.BAD_MESSAGE_LOG_INTERVAL) -> None:
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._last: OrderedDict[str, float] = OrderedDict()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def note(self, peer: str, exc: Exception, now: float | None = None) -> bool:
        """Record one dropped message; returns True when it was logged."""
        now = time.monotonic() if now is None else now
        kind = type(exc).__name__
        self.counts[kind] += 1
        last = self._last.get(peer)
        if last is not None and now - last < self.interval:
            log.debug("dropped message from %s: %s", peer, exc)
            return False
        self._last[peer] = now
        self._last.move_to_end(peer)
        while len(self._last) > const.BAD_MESSAGE_SEEN_MAX:
            self._last.popitem(last=False)
        log.warning("dropped a bad message from %s: %s (%d dropped so far)", peer, exc, self.total)
        return True
