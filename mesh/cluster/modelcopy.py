"""Copying a model file from the peers that hold it, chunked over the mesh.

Serving side (``ModelServer``): any node answers ``ModelWant`` on its task port with one
``ModelPart`` (a chunk of at most ``MODEL_CHUNK`` bytes) of a model it holds.

Asking side (``copy_model``): asks the holders in turn, one chunk at a time, appending to
``<file>.part`` and hashing as it goes. A holder silent for ``MODEL_CHUNK_TIMEOUT`` (dead,
partitioned) is dropped and the copy goes on from the same offset with the next one; the
part stays on disk, so even a copy that ran out of holders resumes later where it stopped.
Only models whose sha256 the asker's registry pins (the manifest, or ``models add --sha256``)
are copied: a holder's own word is never trusted. The copy never grows past the size the
registry states (or the first holder's answer), a ``.part`` longer than that is dropped, and a
disk error fails the copy, not the node. The finished file must have the pinned sha256;
otherwise nothing is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh import const
from mesh.errors import ModelError
from mesh.execute.models import Registry, sha256_file
from mesh.wire.protocol import ModelPart, ModelWant
from mesh.wire.transport import Context, Dealer

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


def _resume_point(part: Path, size: int | None) -> tuple[int, Any]:
    """(bytes already copied, their running sha256) of a ``.part`` from an earlier copy; one longer
    than the file can be is dropped (it can never finish)."""
    h = hashlib.sha256()
    part.parent.mkdir(parents=True, exist_ok=True)
    if not part.exists():
        return 0, h
    if size is not None and part.stat().st_size > size:
        log.info("model copy: %s is longer than the model (%d bytes); starting over", part.name, size)
        part.unlink()
        return 0, h
    offset = 0
    with part.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            offset += len(block)
    return offset, h


def _append(part: Path, data: bytes) -> None:
    with part.open("ab") as f:
        f.write(data)


async def copy_model(
    ctx: Context,
    name: str,
    sha256: str,
    holders: Callable[[], list[tuple[str, int]]],
    dest: Path,
    chunk: int = const.MODEL_CHUNK,
    size: int | None = None,
) -> tuple[str, list[str]]:
    """Copy model ``name`` into ``dest``; returns (its sha256, the node ids it came from).
    ``sha256``: the checksum the registry pins (a copy is never adopted on a holder's word);
    ``size``: the bytes the registry states, if it does (else the first holder's answer is held
    to: a holder that claims more later, or sends past it, is dropped). A disk error fails the copy
    (``ModelError``), never the node. ``holders()`` is asked again whenever one stops answering."""
    part = dest.with_name(dest.name + ".part")
    try:
        offset, h = await asyncio.to_thread(_resume_point, part, size)
    except OSError as exc:
        raise ModelError(f"model {name!r}: cannot prepare {part}: {exc.strerror or exc}") from None
    limit = size  # the file's length, once known
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
                got = await _chunk(d, name, sha256, offset, chunk)
                if got is None:
                    log.info("model copy: %s:%d silent, going on from byte %d with another peer", host, port, offset)
                    failed.add((host, port))
                    break
                msg, data = got
                why = msg.error or _refuse(msg, sha256, limit, offset, len(data))
                if why:
                    log.info("model copy from %s:%d: %s", host, port, why)
                    failed.add((host, port))
                    break
                limit = msg.total
                if msg.node_id and msg.node_id not in sources:
                    sources.append(msg.node_id)
                if data:
                    await _append_part(part, data, name)
                    h.update(data)
                    offset += len(data)
                if offset >= msg.total or not data:
                    await _adopt(part, dest, name, h.hexdigest(), sha256, offset == msg.total)
                    return h.hexdigest(), sources
        finally:
            d.close()


async def _chunk(d: Dealer, name: str, sha256: str, offset: int, chunk: int) -> tuple[ModelPart, bytes] | None:
    """Ask a holder for the chunk at ``offset``; ``None`` when it is silent for ``MODEL_CHUNK_TIMEOUT``."""
    await d.send(ModelWant(name, sha256, offset, chunk))
    try:
        async with asyncio.timeout(const.MODEL_CHUNK_TIMEOUT):
            while True:
                msg, blobs = await d.recv()
                if isinstance(msg, ModelPart) and msg.name == name and msg.offset == offset:
                    return msg, (bytes(blobs[0].buffer) if blobs else b"")
    except TimeoutError:
        return None


async def _append_part(part: Path, data: bytes, name: str) -> None:
    try:
        await asyncio.to_thread(_append, part, data)
    except OSError as exc:  # a full disk: the copy fails, the part is kept to resume
        raise ModelError(f"model {name!r}: cannot write {part}: {exc.strerror or exc}") from None


async def _adopt(part: Path, dest: Path, name: str, digest: str, sha256: str, whole: bool) -> None:
    """The finished ``.part`` becomes the model if its checksum is the pinned one; else it is deleted."""
    if digest != sha256 or not whole:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise ModelError(f"model {name!r} copied with sha256 {digest}, expected {sha256}; deleted")
    await asyncio.to_thread(part.replace, dest)


def _refuse(msg: ModelPart, sha256: str, limit: int | None, offset: int, n: int) -> str:
    """Why a holder's chunk is not taken ("" = it is)."""
    if msg.sha256 != sha256:
        return f"it holds sha256 {msg.sha256[:12]}..., not {sha256[:12]}..."
    if limit is not None and msg.total != limit:
        return f"it says the model is {msg.total} bytes, not {limit}"
    if offset + n > msg.total:
        return f"it sent past the end it stated ({msg.total} bytes)"
    return ""
