"""Copying a model file from the peers that hold it, chunked over the mesh.

Serving side (``ModelServer``): any node answers ``ModelWant`` on its task port with one
``ModelPart`` (a chunk of at most ``MODEL_CHUNK`` bytes) of a model it holds.

Asking side (``copy_model``): asks the holders in turn, one chunk at a time, appending to
``<file>.part`` and hashing as it goes. A holder silent for ``MODEL_CHUNK_TIMEOUT`` (dead,
partitioned) is dropped and the copy goes on from the same offset with the next one; the
part stays on disk, so even a copy that ran out of holders resumes later where it stopped.
The finished file must have the sha256 the asker expects (its registry's, or the
holder's when it has none); otherwise nothing is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from mesh import const
from mesh.errors import ModelError
from mesh.execute.models import Registry, sha256_file
from mesh.wire.protocol import ModelPart, ModelWant
from mesh.wire.transport import Context

log = logging.getLogger("lamamesh.modelcopy")


class ModelServer:
    """Answers chunk requests for the models this node holds (checksums cached per file)."""

    def __init__(self, home: Path, node_id: str) -> None:
        self.registry = Registry(home)
        self.node_id = node_id
        self._sums: dict[tuple[Path, int, int], str] = {}

    def _sha(self, path: Path) -> str:
        st = path.stat()
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._sums:
            self._sums[key] = sha256_file(path)
        return self._sums[key]

    def _read(self, want: ModelWant) -> tuple[ModelPart, list[bytes]]:
        entry = next((e for e in self.registry.entries() if e.spec.name == want.name and e.path), None)
        if entry is None or entry.path is None:
            return ModelPart(want.name, error=f"node {self.node_id} does not hold model {want.name!r}"), [b""]
        sha = self._sha(entry.path)
        total = entry.path.stat().st_size
        if want.sha256 and want.sha256 != sha:
            err = f"node {self.node_id} holds {want.name!r} with sha256 {sha[:12]}..., not {want.sha256[:12]}..."
            return ModelPart(want.name, sha, 0, total, err, self.node_id), [b""]
        if want.offset < 0 or want.offset > total:
            return ModelPart(want.name, sha, 0, total, f"offset {want.offset} is past the end", self.node_id), [b""]
        length = max(1, min(want.length or const.MODEL_CHUNK, const.MODEL_CHUNK))
        with entry.path.open("rb") as f:
            f.seek(want.offset)
            data = f.read(length)
        return ModelPart(want.name, sha, want.offset, total, "", self.node_id), [data]

    async def answer(self, want: ModelWant) -> tuple[ModelPart, list[bytes]]:
        return await asyncio.to_thread(self._read, want)


async def copy_model(
    ctx: Context,
    name: str,
    sha256: str | None,
    holders: Callable[[], list[tuple[str, int]]],
    dest: Path,
    chunk: int = const.MODEL_CHUNK,
) -> tuple[str, list[str]]:
    """Copy model ``name`` into ``dest``; returns (its sha256, the node ids it came from).
    ``holders()`` is asked again whenever one stops answering (it may have learned of others)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    offset = 0
    if part.exists():
        with part.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                offset += len(block)
    expect = sha256 or ""
    sources: list[str] = []
    failed: set[tuple[str, int]] = set()
    while True:
        todo = [a for a in holders() if a not in failed]
        if not todo:
            raise ModelError(f"no peer could send model {name!r} ({offset} bytes copied, kept to resume)")
        host, port = todo[0]
        d = ctx.dealer()
        d.connect(host, port)
        try:
            while True:
                await d.send(ModelWant(name, expect, offset, chunk))
                try:
                    async with asyncio.timeout(const.MODEL_CHUNK_TIMEOUT):
                        while True:
                            msg, blobs = await d.recv()
                            if isinstance(msg, ModelPart) and msg.name == name and msg.offset == offset:
                                break
                except TimeoutError:
                    log.info("model copy: %s:%d silent, going on from byte %d with another peer", host, port, offset)
                    failed.add((host, port))
                    break
                if msg.error:
                    log.info("model copy: %s", msg.error)
                    failed.add((host, port))
                    break
                if not expect:
                    expect = msg.sha256  # the asker's registry has no checksum: hold the peer to its own
                if msg.sha256 != expect:
                    failed.add((host, port))
                    break
                if msg.node_id and msg.node_id not in sources:
                    sources.append(msg.node_id)
                data = bytes(blobs[0].buffer) if blobs else b""
                if data:
                    with part.open("ab") as f:
                        f.write(data)
                    h.update(data)
                    offset += len(data)
                if offset >= msg.total or not data:
                    digest = h.hexdigest()
                    if digest != expect or offset != msg.total:
                        part.unlink(missing_ok=True)
                        raise ModelError(f"model {name!r} copied with sha256 {digest}, expected {expect}; deleted")
                    part.replace(dest)
                    return digest, sources
        finally:
            d.close()
