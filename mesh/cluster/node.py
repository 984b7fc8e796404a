"""A node: one asyncio process that finds its peers, elects a leader, routes and works.

``Node.run()`` owns one root TaskGroup. Sockets are bound first (a port in use fails
before anything starts), then the slot processes start, then the node advertises itself
(mDNS) and serves until ``request_stop()``.

Data flows one way through the modules, and only this file wires them together:
discovery (mDNS ``Found``/goodbye) and static ``--peer`` pings -> gossip SUB connections ->
``membership.apply`` -> ``election.decide`` -> the scheduler (``Scheduler``: places while it leads, else redirects)
and the worker (follows the leader's backend) -> slots.

Leaving (SIGINT/SIGTERM): the node publishes ``leaving`` and says goodbye on mDNS, so it
is out of elections and placement at once. A leader waits (bounded) for the mesh to elect
another leader and hands its queued tasks back to their clients (they resubmit there); a
worker tells the leader to re-queue what it holds. Tasks already running finish within
``shutdown_grace``; a node alone drains its own queue the same way, then answers the rest
with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import psutil

from mesh import const
from mesh.cluster.discovery import Discovery, Found
from mesh.cluster.face import Counters, Health, Service, TaskObserver
from mesh.cluster.modelcopy import ModelServer, copy_model
from mesh.cluster.scheduler import Scheduler
from mesh.cluster.worker import LOCAL, Worker
from mesh.config import Config
from mesh.control import election, membership
from mesh.control.election import Decision
from mesh.control.membership import Goodbye, Heard, Tick, View
from mesh.errors import MeshError
from mesh.execute import capabilities
from mesh.execute.models import Registry
from mesh.execute.slots import Executor, SleepPool, make_executor
from mesh.kinds import Role
from mesh.wire.protocol import Heartbeat, NodeRow, Ping, Pong
from mesh.wire.transport import Context, Dealer, Pub, Router, Sub, load_key

log = logging.getLogger("lamamesh.node")
_logged: set[str] = set()


def _once(what: str, exc: BaseException | None = None, level: int = logging.ERROR) -> None:
    """Log a line the first time it is seen (a flood repeats an error thousands of times); an error
    of a loop pass says the loop goes on, with its traceback unless it is an OSError."""
    if what in _logged or len(_logged) > 256:
        return
    _logged.add(what)
    if level < logging.ERROR:
        log.log(level, "%s", what)
        return
    log.error("%s (the loop goes on; logged once)", what, exc_info=exc is not None and not isinstance(exc, OSError))


def new_node_id(port: int) -> str:
    host = socket.gethostname().split(".")[0][:24] or "node"
    return f"{host}-{port}-{secrets.token_hex(2)}"


class Node:
    def __init__(
        self,
        config: Config,
        node_id: str | None = None,
        pool: Executor | None = None,
        services: tuple[Service, ...] = (),
        caps: capabilities.Capabilities | None = None,
    ) -> None:
        self.config = config
        self.services = list(services)  # started after the sockets are bound, closed on the way out
        self._given_pool = pool  # slots the caller already spawned (join does, to overlap their start-up)
        self.node_id = node_id or ""
        self.caps = caps or capabilities.detect(config.gpus)  # join passes what it read for its slots
        self.incarnation = time.time_ns()
        self.host = "127.0.0.1"
        self.task_port = 0
        self.backend_port = 0
        self.gossip_port = 0
        self.ready = asyncio.Event()
        self.scheduler: Scheduler | None = None
        self.worker: Worker | None = None
        self.pool: Executor | None = None
        self.view: View | None = None
        self.decision = Decision("", 0)
        self.leaving = False
        self.models: list[str] = []
        self._stop = asyncio.Event()
        self._decided = asyncio.Event()
        self._pool_ready = asyncio.Event()
        self._failed: MeshError | None = None
        self._seq = 0
        self._alive_ids: set[str] = set()
        self._seen: set[str] = set()  # every node ever alive here (a second arrival is 'back')
        self._started = 0.0
        self._sub: Sub | None = None
        # node id -> its gossip endpoint and when we connected to it (unheard ones are dropped)
        self._gossip_peers: dict[str, tuple[str, int, float]] = {}
        self._last_prune = 0.0
        self._probes: dict[tuple[str, int], Dealer] = {}
        self._pub: Any = None
        self._discovery: Discovery | None = None
        self._ctx: Context | None = None
        self._cpu = psutil.Process()
        self._last_cpu = 0.0
        self._observers: list[TaskObserver] = []

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.task_port}"

    # ---- the heartbeat this node publishes ------------------------------------------------
    def heartbeat(self) -> Heartbeat:
        assert self.scheduler is not None and self.pool is not None and self.worker is not None
        self._seq += 1
        ewma: dict[str, float] = {}
        w = self.scheduler.workers.get(self.node_id.encode()) if self.scheduler.leading else None
        if w is not None:
            ewma = dict(w.service_ms)
        peers = [f"{m.node_id}@{m.hb.host}:{m.hb.gossip_port}" for m in self.view.alive()] if self.view else []
        return Heartbeat(
            node_id=self.node_id,
            incarnation=self.incarnation,
            mesh=self.config.mesh,
            host=self.host,
            task_port=self.task_port,
            backend_port=self.backend_port,
            gossip_port=self.gossip_port,
            term=self.decision.term,
            leader=self.decision.leader,
            leaving=self.leaving,
            seq=self._seq,
            provider=self.pool.provider,
            gpu=self.caps.gpu,
            gpus=tuple(g.line() for g in self.caps.gpus),
            vram_mb=self.caps.vram_mb,
            cores=self.caps.cores,
            ram_mb=self.caps.ram_mb,
            slots=self.pool.size,
            models=tuple(self.models),
            queued=len(self.scheduler.queue) if self.scheduler.leading else 0,
            running=self.pool.busy,
            done=self.worker.done,
            failed=self.worker.failed,
            vram_free_mb=self.caps.vram_free_mb,
            cpu_percent=self._cpu_percent(),
            ewma_ms=ewma,
            rate=round(self.worker.rate(), 3),
            dropped=self._ctx.bad.total + sum(self._ctx.refused.values()) if self._ctx is not None else 0,
            workers=tuple(w.node_id for w in self.scheduler.workers.values()) if self.scheduler.leading else (),
            peers=tuple(peers[:64]),
        )

    def _cpu_percent(self) -> float:
        """psutil reads /proc: with every file descriptor in use (a connection flood) that fails; the
        heartbeat then carries the last figure instead of stopping the node."""
        try:
            self._last_cpu = self._cpu.cpu_percent(None)
        except OSError as exc:
            _once(f"cpu figure unreadable: {exc}")
        return self._last_cpu

    async def _every(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` every ``interval`` seconds; an error in one pass (EMFILE in a flood, a bug) is
        logged (once per kind of error) and the loop goes on, instead of stopping the node."""
        while True:
            try:
                await step()
            except Exception as exc:
                _once(f"{name}: {type(exc).__name__}: {exc}", exc)
            await asyncio.sleep(interval)

    # ---- running: bind, wire, serve, shut down ----------------------------------------------
    async def run(self) -> None:
        cfg = self.config
        key = load_key(cfg.secret_file) if cfg.secret_file else None
        ctx = self._ctx = Context(key, cfg.max_frame_bytes)
        front, back, pub = ctx.router(const.TASK_PORT_SNDHWM), ctx.router(), ctx.pub()
        self._pub = pub
        self._sub = ctx.sub()
        try:
            why = self._bind(front, back, pub)
            self._wire(ctx, front, back)
            log.info(
                "joined mesh %r as node %s: tasks on %s:%d, advertised as %s (%s); backend %d, gossip %d",
                cfg.mesh,
                self.node_id,
                cfg.bind,
                self.task_port,
                self.host,
                why,
                self.backend_port,
                self.gossip_port,
            )
            for svc in self.services:
                await svc.start()
            if cfg.mdns:
                self._discovery = Discovery(
                    cfg.mesh, self._on_found, self._on_gone, "" if cfg.bind == "0.0.0.0" else cfg.bind
                )
                await self._discovery.start()
            await self._serve((front, back, pub))
        finally:
            await self._shut_down(ctx, front, back, pub)
        if self._failed is not None:
            raise self._failed

    def _bind(self, front: Router, back: Router, pub: Pub) -> str:
        """Bind the task, backend and gossip ports; learn our id and advertised address (and why)."""
        cfg = self.config
        self.task_port = front.bind(cfg.bind, cfg.port)
        self.backend_port = back.bind(cfg.bind, self.task_port + 1 if cfg.port else 0)
        self.gossip_port = pub.bind(cfg.bind, self.task_port + 2 if cfg.port else 0)
        self.node_id = self.node_id or new_node_id(self.task_port)
        self.host, why = capabilities.advertised_address(cfg.bind, cfg.advertise)
        return why

    def _wire(self, ctx: Context, front: Router, back: Router) -> None:
        """Make the scheduler, the worker and the view, and connect them to each other and to us."""
        cfg = self.config
        sched = self.scheduler = Scheduler(self.node_id, cfg.mesh, front, back, self.address, cfg.placement)
        sched.gossip_port = self.gossip_port
        sched.status_rows = self.status_nodes
        sched.on_ping = self._on_ping
        sched.max_queued_per_client = cfg.max_queued_per_client
        sched.on_model_want = ModelServer(cfg.home, self.node_id).answer
        self.pool = self._given_pool or make_executor(cfg, self.caps)
        entries = Registry(cfg.home).entries()
        sched.model_names = frozenset(e.spec.name for e in entries)
        self.models = [e.spec.name for e in entries if e.path] if cfg.bench_delay_ms < 0 else []
        worker = self.worker = Worker(
            ctx, self.node_id, self.host, self.pool, task_port=self.task_port, vram_mb=self.caps.vram_mb
        )
        worker.models = self.models  # one list: a model copied later is announced by both
        worker.local = sched.from_local_worker  # while we lead, our worker is a call away
        worker.reply = sched.answer  # results go to the clients on the task port their bytes came by
        worker.on_finished = self._task_finished
        sched.local_worker = worker.reserve
        sched.on_data = worker.data
        sched.on_direct = worker.direct
        self.view = View(
            self.node_id,
            cfg.mesh,
            dead_timeout=cfg.dead_timeout,
            forget_after=const.FORGET_AFTER,
            max_members=cfg.max_members,
        )

    async def _serve(self, socks: tuple[Router, Router, Pub]) -> None:
        """Every loop of the node in one task group, until asked to stop; then the graceful leave.
        The slots load while the node already gossips and (for mDNS) probes its name: the worker
        grants credit only once they are up, but the mesh knows it meanwhile."""
        assert self.scheduler is not None and self.worker is not None
        cfg = self.config
        self._started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            loops: list[asyncio.Task[Any]] = [
                tg.create_task(self._start_pool(), name="slots"),
                tg.create_task(self.scheduler.serve_front(), name="front"),
                tg.create_task(self.scheduler.serve_back(), name="back"),
                tg.create_task(self.worker.run(), name="worker"),
                tg.create_task(self._gossip_out(), name="gossip-out"),
                tg.create_task(self._gossip_in(), name="gossip-in"),
                tg.create_task(self._tick_loop(), name="tick"),
                tg.create_task(self._probe_peers(), name="probe"),
                *(tg.create_task(sock.watch_refusals(), name="refusals") for sock in socks),
            ]
            if cfg.copy_models and cfg.bench_delay_ms < 0:
                loops.append(tg.create_task(self._copy_models(), name="model-copy"))
            if self._discovery is not None:
                loops.append(tg.create_task(self._advertise(self._discovery), name="mdns"))
            waiter = tg.create_task(self._until_ready())
            await asyncio.wait({waiter, tg.create_task(self._stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if self._failed is None:
                self.ready.set()
            await self._stop.wait()
            if self._failed is None:
                await self._leave(self._discovery)
            self._discovery = None  # closed by the leave
            for t in [*loops, waiter]:
                t.cancel()

    async def _shut_down(self, ctx: Context, front: Router, back: Router, pub: Pub) -> None:
        """Close everything the node opened, whatever state it got to (answers still queued get a
        linger of ``LEAVE_LINGER_MS``)."""
        self.ready.clear()
        for svc in self.services:
            await svc.close()
        if self._discovery is not None:
            await self._discovery.close()
            self._discovery = None
        if self.pool is not None:
            await self.pool.close()
        if self.worker is not None:
            self.worker.dealer.close(linger=const.LEAVE_LINGER_MS)
        front.close(linger=const.LEAVE_LINGER_MS)
        subs = [self._sub.close] if self._sub is not None else []
        for closer in (back.close, pub.close, *subs, *(d.close for d in self._probes.values())):
            closer()
        ctx.close()
        log.info("node %s stopped", self.node_id or "(not started)")

    # ---- what surfaces see (cluster.face.NodeFace) -------------------------------------------
    @property
    def context(self) -> Context:
        assert self._ctx is not None, "the node is not running"
        return self._ctx

    @property
    def task_address(self) -> tuple[str, int]:
        return (self.config.local_host, self.task_port)

    @property
    def dead_timeout(self) -> float:
        return self.config.dead_timeout

    def observe_tasks(self, observer: TaskObserver) -> None:
        self._observers.append(observer)

    def _task_finished(self, model: str, ok: bool, ms: float) -> None:
        for observe in self._observers:
            observe(model, ok, ms)

    def health(self) -> Health:
        alive = self.view.alive() if self.view is not None else []
        state = "leaving" if self.leaving else "ok" if self.ready.is_set() else "starting"
        return Health(
            status=state,
            node=self.node_id,
            mesh=self.config.mesh,
            role=Role.LEADER if self.scheduler is not None and self.scheduler.leading else Role.WORKER,
            leader=self.decision.leader,
            term=self.decision.term,
            nodes=len(alive),
            slots=sum(m.hb.slots for m in alive),
            busy=sum(m.hb.running for m in alive),
            provider=self.pool.provider if self.pool is not None else "",
        )

    def counters(self) -> Counters | None:
        worker, sched, view = self.worker, self.scheduler, self.view
        if worker is None or sched is None or view is None:
            return None
        alive = view.alive()
        lm = view.get(self.decision.leader) if self.decision.leader else None
        dropped: dict[str, int] = {}
        if self._ctx is not None:
            dropped.update(sorted(self._ctx.bad.counts.items()))
            dropped["no mesh key"] = sum(self._ctx.refused.values())
        dropped.update(sched.refused)
        return Counters(
            tasks=dict(worker.outcomes),
            answered=dict(sched.outcomes),
            alive=len(alive),
            dead=len(view.members) - len(alive),
            term=self.decision.term,
            leading=sched.leading,
            queue_depth=len(sched.queue) if sched.leading else (lm.hb.queued if lm is not None else 0),
            slots=self.pool.size if self.pool is not None else 0,
            slots_busy=len(worker.running),
            mesh_slots=sum(m.hb.slots for m in alive),
            dropped=dropped,
            rate=worker.rate(),
        )

    async def _until_ready(self) -> None:
        await self._decided.wait()
        await self._pool_ready.wait()

    async def _advertise(self, discovery: Discovery) -> None:
        await discovery.advertise(self.node_id, [self.host], self.task_port, self.gossip_port)

    async def _start_pool(self) -> None:
        """Start the slots; a failure (model missing, port of a slot...) stops the node with that error."""
        assert self.pool is not None and self.worker is not None
        try:
            await self.pool.start()
        except MeshError as exc:
            self._failed = exc
            self._stop.set()
            return
        if isinstance(self.pool, SleepPool):
            log.warning("execution: %s (%d slots)", self.pool.reason, self.pool.size)
        else:
            threads = max(1, self.caps.cores // self.pool.size)
            log.info("execution: %s (%d slots, %d threads each)", self.pool.reason, self.pool.size, threads)
        self._pool_ready.set()
        if self.view is not None:
            await self._follow(self.view)

    async def _leave(self, discovery: Discovery | None) -> None:
        """The graceful leave described in the module docstring; every wait is bounded."""
        assert self.scheduler is not None and self.worker is not None
        cfg = self.config
        self.leaving = True
        await self._publish()
        if discovery is not None:
            await discovery.close()
        log.info("leaving: %d tasks held, %d running", len(self.scheduler.tasks), len(self.worker.running))
        others = [m for m in (self.view.usable() if self.view else []) if m.node_id != self.node_id]
        if self.scheduler.leading and others:
            # let the others elect a new leader, then hand our queue to it through the clients
            deadline = time.monotonic() + max(2.0, 3 * cfg.heartbeat_interval + cfg.election_wait)
            while self.decision.leader in ("", self.node_id) and time.monotonic() < deadline:
                self._decided.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                        await self._decided.wait()
            if self.decision.leader in ("", self.node_id):
                await self.scheduler.drain(cfg.shutdown_grace)
            else:
                self.scheduler.accepting = False
        elif self.scheduler.leading:
            await self.scheduler.drain(cfg.shutdown_grace)
        else:
            self.scheduler.accepting = False
        await self.worker.leave()
        deadline = time.monotonic() + cfg.shutdown_grace
        while self.worker.running and time.monotonic() < deadline:
            await asyncio.wait(set(self.worker.running), timeout=max(0.01, deadline - time.monotonic()))
        if self.worker.running:
            log.warning("leaving with %d tasks unfinished; the leader re-queues them", len(self.worker.running))

    # ---- gossip --------------------------------------------------------------------------
    async def _publish(self) -> None:
        """Publish our heartbeat and put it in our own view (once per heartbeat, not per tick)."""
        if self._pub is not None and self.scheduler is not None:
            hb = self.heartbeat()
            if self.view is not None:
                self.view = membership.apply(self.view, Heard(hb), time.monotonic())
            await self._pub.send(hb)

    async def _gossip_out(self) -> None:
        await self._every("heartbeat", self.config.heartbeat_interval, self._publish)

    async def _gossip_in(self) -> None:
        assert self._sub is not None
        while True:
            msg = await self._sub.recv()
            if isinstance(msg, Heartbeat) and msg.node_id != self.node_id:
                self._heard(msg)

    def _heard(self, hb: Heartbeat) -> None:
        assert self.view is not None
        if hb.mesh != self.config.mesh:
            return
        self.view = membership.apply(self.view, Heard(hb), time.monotonic())
        self._connect_gossip(hb.node_id, hb.host, hb.gossip_port)
        for entry in hb.peers:
            node_id, _, addr = entry.partition("@")
            host, _, port = addr.rpartition(":")
            if node_id and node_id != self.node_id and port.isdigit():
                self._connect_gossip(node_id, host, int(port))

    def _connect_gossip(self, node_id: str, host: str, port: int) -> None:
        assert self._sub is not None
        if not port or node_id == self.node_id:
            return
        known = self._gossip_peers.get(node_id)
        if known is not None and known[:2] == (host, port):
            return
        if known is None and len(self._gossip_peers) >= self.config.max_members:
            return  # a flood of made-up endpoints stops here; the real ones are heard and kept
        if known is not None:
            self._sub.disconnect(known[0], known[1])  # it moved: a restart on another port
        self._gossip_peers[node_id] = (host, port, time.monotonic())
        if self._sub.connect(host, port):
            log.debug("gossip: subscribed to %s at %s:%d", node_id or "a peer", host, port)

    def _prune_gossip(self, view: View, now: float) -> None:
        """Disconnect from gossip endpoints no heartbeat came from within ``GOSSIP_UNHEARD_DROP``
        (closed endpoints listed by a peer, made-up ones) and from members forgotten: reconnecting
        to them forever cost a node 13% CPU after a flood of fake peer lists."""
        if now - self._last_prune < 1.0 or self._sub is None:
            return
        self._last_prune = now
        for node_id, (host, port, since) in list(self._gossip_peers.items()):
            if node_id not in view.members and now - since > const.GOSSIP_UNHEARD_DROP:
                del self._gossip_peers[node_id]
                if not any((h, p) == (host, port) for h, p, _ in self._gossip_peers.values()):
                    self._sub.disconnect(host, port)

    def _on_found(self, f: Found) -> None:
        if f.node_id != self.node_id:
            self._connect_gossip(f.node_id, f.hosts[0], f.gossip_port)

    def _on_gone(self, node_id: str) -> None:
        if self.view is not None and node_id != self.node_id:
            self.view = membership.apply(self.view, Goodbye(node_id), time.monotonic())

    def _on_ping(self, ping: Ping) -> None:
        """A node that has us as a static --peer announced its gossip endpoint: subscribe back."""
        if ping.mesh == self.config.mesh and ping.host and ping.gossip_port:
            self._connect_gossip(ping.node_id, ping.host, ping.gossip_port)

    async def _probe_peers(self) -> None:
        """Ping each static --peer so it and we subscribe to each other's gossip (again after a restart)."""
        from mesh.config import parse_peer

        targets = {parse_peer(p) for p in self.config.peers} - {(self.host, self.task_port)}
        async with asyncio.TaskGroup() as tg:
            for host, port in sorted(targets):
                tg.create_task(self._probe(host, port))

    async def _probe(self, host: str, port: int) -> None:
        assert self.view is not None and self._ctx is not None
        d = self._ctx.dealer()
        self._probes[(host, port)] = d
        d.connect(host, port)
        while True:
            alive = any(m.address == (host, port) for m in self.view.alive())
            if alive:  # known: check now and then that it still knows us (it may have restarted)
                await asyncio.sleep(const.PEER_RECHECK_INTERVAL)
            await d.send(Ping(0, self.node_id, self.host, self.gossip_port, self.config.mesh))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(const.PEER_PROBE_INTERVAL):
                    while True:
                        msg, _ = await d.recv()
                        if isinstance(msg, Pong) and msg.mesh == self.config.mesh and msg.gossip_port:
                            self._connect_gossip(msg.node_id, host, msg.gossip_port)
                            await asyncio.sleep(self.config.heartbeat_interval * 2)
                            break

    # ---- models held by peers -------------------------------------------------------------------
    async def _copy_models(self) -> None:
        """Copy, one at a time, each model a live peer holds that this node's registry knows but lacks."""
        retry_at: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            if self.view is None or self.leaving:
                continue
            now = time.monotonic()
            lacking = {n for m in self.view.alive() if m.node_id != self.node_id for n in m.hb.models}
            lacking -= set(self.models)
            if not lacking:
                continue  # the usual case: no disk read each heartbeat
            known = {e.spec.name for e in Registry(self.config.home).entries()}
            for name in sorted(lacking & known):
                if retry_at.get(name, 0.0) <= now:
                    if not await self._copy_one(name):
                        retry_at[name] = time.monotonic() + const.MODEL_COPY_RETRY
                    break

    async def _copy_one(self, name: str) -> bool:
        assert self._ctx is not None and self.worker is not None
        reg = Registry(self.config.home)

        def holders() -> list[tuple[str, int]]:
            alive = self.view.alive() if self.view is not None else []
            return [(m.hb.host, m.hb.task_port) for m in alive if m.node_id != self.node_id and name in m.hb.models]

        started = time.monotonic()
        try:
            dest, sha = reg.destination(name)
            spec = next(e.spec for e in reg.entries() if e.spec.name == name)
            if sha is None:
                _once(
                    f"model {name} is held by a peer but no checksum is pinned for it here; not copied "
                    f"(lamamesh models add FILE --name {name} --sha256 ..., or copy the file by hand)",
                    level=logging.INFO,
                )
                return False
            log.info("copying model %s from a peer", name)
            digest, sources = await copy_model(self._ctx, name, sha, holders, dest, size=spec.bytes or None)
            await asyncio.to_thread(reg.adopt, name, dest)
        except (MeshError, OSError) as exc:
            log.warning("model %s not copied: %s; trying again in %g s", name, exc, const.MODEL_COPY_RETRY)
            return False
        size = (reg.resolve(name)[1]).stat().st_size
        log.info(
            "model %s copied from %s (%.1f MB in %.1f s, sha256 %s ok)",
            name,
            ", ".join(sources) or "a peer",
            size / 1e6,
            time.monotonic() - started,
            digest[:12],
        )
        self.models.append(name)
        await self.worker.send_ready()  # the leader learns the new model with the grant
        return True

    # ---- membership and election -------------------------------------------------------------
    async def _tick_loop(self) -> None:
        await self._every("tick", const.TICK, self._tick)

    async def _tick(self) -> None:
        assert self.view is not None and self.scheduler is not None and self.worker is not None
        now = time.monotonic()
        view = membership.apply(self.view, Tick(), now)  # we are in it from _publish, always alive
        self.view = view
        alive_now = {m.node_id for m in view.alive()}
        for node_id in sorted(alive_now - self._alive_ids - {self.node_id}):
            hb = view.members[node_id].hb
            what = "is back" if node_id in self._seen else "joined"
            log.info("node %s %s (%s:%d, %s, %d slots)", node_id, what, hb.host, hb.task_port, hb.provider, hb.slots)
            self._seen.add(node_id)
        for node_id in sorted(self._alive_ids - alive_now):
            m = view.get(node_id)
            if m is None or not m.hb.leaving:
                log.info("node %s is dead (silent %.1f s)", node_id, now - m.last_heard if m else -1)
            else:
                log.info("node %s left", node_id)
        self._alive_ids = alive_now
        if self.scheduler.leading:
            await self.scheduler.sweep(now)
            out = {w.node_id for w in self.scheduler.workers.values()} - {self.node_id}
            for node_id in sorted(out):
                m = view.get(node_id)
                if m is None or not m.usable:
                    await self.scheduler.drop_worker(node_id, "left" if m is not None and m.hb.leaving else "died")
        eligible = now - self._started >= self.config.election_wait
        new = election.decide(view, self.decision, eligible, self.leaving)
        if new != self.decision:
            old = self.decision
            self.decision = new
            if new.leader != old.leader:
                if new.leader == self.node_id:
                    log.info("this node leads mesh %r (term %d)", self.config.mesh, new.term)
                elif new.leader:
                    log.info("leader is %s (term %d)", new.leader, new.term)
                else:
                    log.info("no leader (term %d): electing", new.term)
            await self._follow(view)
            await self._publish()
        self.scheduler.members = [f"{m.hb.host}:{m.hb.task_port}" for m in view.usable()]
        self._prune_gossip(view, now)
        await self._follow(view)
        lm = view.get(self.decision.leader) if self.decision.leader else None
        if (
            lm is not None
            and lm.leads
            and self.node_id not in lm.hb.workers
            and now - self.worker.last_ready > max(1.0, 3 * self.config.heartbeat_interval)
        ):
            await self.worker.send_ready()

    async def _follow(self, view: View) -> None:
        """Point the router and the worker at the leader of ``self.decision``."""
        assert self.scheduler is not None and self.worker is not None
        leader_id, term = self.decision.leader, self.decision.term
        m = view.get(leader_id) if leader_id else None
        if leader_id and m is None:
            return  # a leader named by others that we have not heard ourselves yet
        addr = f"{m.hb.host}:{m.hb.task_port}" if m else ""
        if (leader_id, addr, term) != (self.scheduler.leader_id, self.scheduler.leader_addr, self.scheduler.term):
            await self.scheduler.set_role(leader_id, addr, term)
        if m is not None and self._pool_ready.is_set():
            if leader_id == self.node_id:  # our own router: calls, no socket
                await self.worker.follow(LOCAL)
            else:
                await self.worker.follow(f"tcp://{m.hb.host}:{m.hb.backend_port}")
            if not self._decided.is_set():
                self._decided.set()
        elif self._decided.is_set() and self.leaving:
            self._decided.set()

    # ---- status ------------------------------------------------------------------------------
    def status_nodes(self) -> tuple[NodeRow, ...]:
        """Every member as this node sees it, for ``status``."""
        assert self.view is not None and self.scheduler is not None
        now = time.monotonic()
        leading = self.scheduler.leading
        measured = self.scheduler.measured_ms() if leading else {}
        rows = []
        for m in sorted(self.view.members.values(), key=lambda m: m.node_id):
            hb = m.hb
            rows.append(
                NodeRow(
                    id=hb.node_id,
                    host=hb.host,
                    port=hb.task_port,
                    role=Role.LEADER if hb.node_id == self.decision.leader else Role.WORKER,
                    alive=m.alive,
                    leaving=hb.leaving,
                    provider=hb.provider,
                    gpu=hb.gpu,
                    gpus=hb.gpus,
                    vram_mb=hb.vram_mb,
                    cores=hb.cores,
                    slots=hb.slots,
                    busy=hb.running,
                    queued=hb.queued,
                    done=hb.done,
                    failed=hb.failed,
                    cpu_percent=round(hb.cpu_percent, 1),
                    ewma_ms=tuple(sorted(measured.get(hb.node_id, {}).items())),
                    rate=hb.rate,
                    dropped=hb.dropped,
                    models=hb.models,
                    last_heard_s=round(now - m.last_heard, 2),
                    ready=hb.node_id in measured,
                    term=hb.term,
                )
            )
        return tuple(rows)


@contextlib.asynccontextmanager
async def embedded(config: Config) -> AsyncIterator[Node]:
    """A node inside this process on 127.0.0.1 with ephemeral ports, for as long as the block runs."""
    node = Node(replace(config, bind="127.0.0.1", port=0, http=0, peers=(), mdns=False, election_wait=0.0))
    runner = asyncio.create_task(node.run(), name="embedded-node")
    ready = asyncio.create_task(node.ready.wait())
    try:
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # raises what made the node fail
        yield node
    finally:
        ready.cancel()
        node.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
