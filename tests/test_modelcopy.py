"""Peer copy of models: chunked over real ZeroMQ sockets, sha256 checked, resumed from another
peer when the one sending dies; and between real node processes with no command at all."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mesh.cluster.modelcopy import ModelServer, copy_model
from mesh.errors import ModelError
from mesh.execute.models import Registry, data_dir, sha256_file
from mesh.surface.client import Client, Job, JobResult
from mesh.wire.protocol import ModelWant
from mesh.wire.transport import Context, Router

from .cluster import cluster, png, status, wait_mesh, wait_until


def holding(home: Path, name: str, data: bytes, tmp: Path) -> None:
    src = tmp / f"{name}.src"
    src.write_bytes(data)
    Registry(home).add(src, name=name, shapes={})


def knowing(home: Path, like: Path) -> None:
    """A home whose registry knows the models of ``like`` but holds none of their files."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(like / "models.json", home / "models.json")


async def serve(ctx: Context, server: ModelServer, chunks: int | None = None) -> tuple[Router, int, asyncio.Task[None]]:
    """A task port that answers model chunks; with ``chunks`` it dies (closes) after that many."""
    router = ctx.router()
    port = router.bind("127.0.0.1", 0)

    async def loop() -> None:
        sent = 0
        while chunks is None or sent < chunks:
            client, msg, _ = await router.recv()
            if isinstance(msg, ModelWant):
                part, data = await server.answer(msg)
                await router.send(client, part, data)
                sent += 1
        router.close()

    return router, port, asyncio.create_task(loop())


def test_copy_resumes_from_another_peer_when_the_first_dies(tmp_path: Path) -> None:
    blob = os.urandom(10 << 20)
    a, c, b = tmp_path / "a", tmp_path / "c", tmp_path / "b"
    holding(a, "big", blob, tmp_path)
    holding(c, "big", blob, tmp_path)
    knowing(b, a)
    dest, sha = Registry(b).destination("big")
    assert sha == hashlib.sha256(blob).hexdigest() and not dest.exists()

    async def main() -> tuple[str, list[str]]:
        ctx = Context()
        ra, pa, ta = await serve(ctx, ModelServer(a, "node-a"), chunks=2)  # dies after 2 chunks
        rc, pc, tc = await serve(ctx, ModelServer(c, "node-c"))
        order = [("127.0.0.1", pa), ("127.0.0.1", pc)]
        try:
            return await copy_model(ctx, "big", sha, lambda: order, dest, chunk=1 << 20)
        finally:
            for t in (ta, tc):
                t.cancel()
            await asyncio.gather(ta, tc, return_exceptions=True)
            for r in (ra, rc):
                r.close()
            ctx.close()

    digest, sources = asyncio.run(main())
    assert digest == sha and sha256_file(dest) == sha and sources == ["node-a", "node-c"]
    assert Registry(b).resolve("big")[1] == dest


def test_a_peer_with_other_bytes_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    holding(a, "big", b"the real model", tmp_path)
    knowing(b, a)
    holding(a, "big", b"someone changed it", tmp_path)  # a now holds other bytes under the name
    dest, sha = Registry(b).destination("big")

    async def main() -> None:
        ctx = Context()
        ra, pa, ta = await serve(ctx, ModelServer(a, "node-a"))
        try:
            await copy_model(ctx, "big", sha, lambda: [("127.0.0.1", pa)], dest)
        finally:
            ta.cancel()
            await asyncio.gather(ta, return_exceptions=True)
            ra.close()
            ctx.close()

    with pytest.raises(ModelError, match="no peer could send"):
        asyncio.run(main())
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_a_node_copies_a_model_it_lacks_from_a_peer(tmp_path: Path) -> None:
    """Node A holds model 'mine' (a real ONNX file), node B only knows it: B copies it, announces it,
    and runs tasks with it once A is gone."""
    home_a, home_b = tmp_path / "ha", tmp_path / "hb"
    holding(home_a, "mine", (data_dir() / "builtin_fill.onnx").read_bytes(), tmp_path)
    knowing(home_b, home_a)
    with cluster(tmp_path) as c:
        c.env["LAMAMESH_HOME"] = str(home_a)
        a = c.start(1)[0]
        c.env["LAMAMESH_HOME"] = str(home_b)
        b = c.start(1)[0]
        wait_mesh(c, 2)
        wait_until(lambda: "model mine copied from" in b.text(), 60, "B to copy the model")

        def b_announces() -> bool:
            nodes = status(a.port).get("nodes", [])
            return any(n["port"] == b.port and "mine" in n["models"] for n in nodes)

        wait_until(b_announces, 20, "B's heartbeat to list the model")
        a.kill()  # the only other holder is gone: B runs 'mine' tasks itself
        mask = np.zeros((48, 64), np.uint8)
        mask[20:28, 24:40] = 255
        job = Job(png(np.full((48, 64, 3), 90, np.uint8)), png(mask))

        async def run() -> JobResult:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", b.port)])
            try:
                await client.connect()
                (r,) = await client.run([replace(job, model="mine")], timeout=60)
                return r
            finally:
                client.close()
                ctx.close()

        res = asyncio.run(run())
        assert res.ok and res.node_id.split("-")[-2] == str(b.port), res
    spec, path = Registry(home_b).resolve("mine")
    assert sha256_file(path) == spec.sha256 == json.loads((home_a / "models.json").read_text())["models"][0]["sha256"]


async def _liar(ctx: Context, sha: str, total: int) -> tuple[Router, int, asyncio.Task[None]]:
    """A holder that speaks the protocol and lies: the right checksum, a made-up length, junk bytes."""
    router = ctx.router()
    port = router.bind("127.0.0.1", 0)

    async def loop() -> None:
        from mesh.wire.protocol import ModelPart

        while True:
            client, msg, _ = await router.recv()
            if isinstance(msg, ModelWant):
                part = ModelPart(msg.name, sha, msg.offset, total, "", "liar")
                await router.send(client, part, [b"\0" * (1 << 20)])

    return router, port, asyncio.create_task(loop())


def _copy_from(name: str, sha: str, dest: Path, size: int | None) -> None:
    async def main() -> None:
        ctx = Context()
        router, p, task = await _liar(ctx, sha, 10**12)
        try:
            await copy_model(ctx, name, sha, lambda: [("127.0.0.1", p)], dest, chunk=1 << 20, size=size)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            router.close()
            ctx.close()

    asyncio.run(main())


def test_a_holder_claiming_a_terabyte_writes_nothing_past_the_pinned_size(tmp_path: Path) -> None:
    """Finding 4 of the hostile-peer probe: a holder claiming `lama` was 1 TB wrote 2,136 MiB into
    the .part in 10 s; nothing compared it with the registry's size."""
    a, b = tmp_path / "a", tmp_path / "b"
    holding(a, "big", b"x" * 5000, tmp_path)
    knowing(b, a)
    entry = next(e.spec for e in Registry(b).entries() if e.spec.name == "big")
    assert entry.bytes == 5000  # `models add` pins the size with the checksum
    dest, sha = Registry(b).destination("big")
    assert sha is not None
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"y" * 9000)  # longer than the model can be: never finishes, so dropped
    with pytest.raises(ModelError, match="no peer could send"):
        _copy_from("big", sha, dest, entry.bytes)
    assert not part.exists() or part.stat().st_size == 0
    assert not dest.exists()


def test_a_disk_error_fails_the_copy_not_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mesh.cluster.modelcopy as mc

    blob = os.urandom(3 << 20)
    a, b = tmp_path / "a", tmp_path / "b"
    holding(a, "big", blob, tmp_path)
    knowing(b, a)
    dest, sha = Registry(b).destination("big")
    assert sha is not None

    def full(part: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mc, "_append", full)

    async def main() -> None:
        ctx = Context()
        ra, pa, ta = await serve(ctx, ModelServer(a, "node-a"))
        try:
            await copy_model(ctx, "big", sha, lambda: [("127.0.0.1", pa)], dest, chunk=1 << 20)
        finally:
            ta.cancel()
            await asyncio.gather(ta, return_exceptions=True)
            ra.close()
            ctx.close()

    with pytest.raises(ModelError, match="No space left on device"):
        asyncio.run(main())
