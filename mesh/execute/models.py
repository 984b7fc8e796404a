"""The model registry: the manifest shipped in the package plus models the user added.

Each entry declares the model's contract (fixed size or multiple, channel order,
output range) and checksum; the pipeline adapts to it and the file is never edited.
User models live in ``<home>/models`` with their entries in ``<home>/models.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mesh.errors import ModelError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    sha256: str | None = None
    bytes: int | None = None
    size: int = 0  # > 0: fixed square input size
    multiple: int = 8  # dynamic models: H and W padded to a multiple of this
    channels: str = "rgb"  # rgb | bgr
    output_range: float = 1.0  # the model's output spans 0..output_range
    builtin: bool = False
    url: str | None = None
    description: str = ""
    licence: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class ModelEntry:
    spec: ModelSpec
    path: Path | None  # where the file is on this machine, None when absent


def data_dir() -> Path:
    return Path(str(resources.files("mesh") / "data"))


def manifest() -> list[ModelSpec]:
    raw = json.loads((data_dir() / "manifest.json").read_text())
    return [ModelSpec.from_dict(d) for d in raw["models"]]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Registry:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.models_dir = home / "models"
        self.index = home / "models.json"

    def _user(self) -> list[ModelSpec]:
        if not self.index.exists():
            return []
        try:
            raw = json.loads(self.index.read_text())
            return [ModelSpec.from_dict(d) for d in raw.get("models", [])]
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"model index {self.index} is unreadable ({exc}); fix or delete it") from None

    def entries(self) -> list[ModelEntry]:
        user = {s.name: s for s in self._user()}
        out = []
        for spec in manifest():
            if spec.name in user:
                spec = user.pop(spec.name)
            out.append(ModelEntry(spec, self._path(spec)))
        out.extend(ModelEntry(s, self._path(s)) for s in user.values())
        return out

    def _path(self, spec: ModelSpec) -> Path | None:
        p = data_dir() / spec.file if spec.builtin else self.models_dir / spec.file
        return p if p.is_file() else None

    def resolve(self, name: str) -> tuple[ModelSpec, Path]:
        for e in self.entries():
            if e.spec.name == name:
                if e.path is None:
                    how = f"lamamesh models fetch {name}" if e.spec.url else f"lamamesh models add PATH --name {name}"
                    raise ModelError(f"model {name!r} is not on this machine; get it with: {how}")
                return e.spec, e.path
        names = ", ".join(e.spec.name for e in self.entries())
        raise ModelError(f"unknown model {name!r}; known models: {names}")

    def destination(self, name: str) -> tuple[Path, str | None]:
        """Where a fetch or peer copy of model ``name`` writes, and the sha256 it must have (None:
        no checksum is recorded; ``adopt`` then registers the file with the one it has)."""
        spec = next((e.spec for e in self.entries() if e.spec.name == name), None)
        if spec is None:
            names = ", ".join(e.spec.name for e in self.entries())
            raise ModelError(f"unknown model {name!r}; known models: {names} (or give --url and --sha256)")
        if spec.builtin:
            raise ModelError(f"model {name!r} ships inside lamamesh; there is nothing to fetch")
        if spec.sha256:
            return self.models_dir / spec.file, spec.sha256
        return self.models_dir / f".{name}.fetched", None

    def adopt(self, name: str, fetched: Path) -> ModelSpec:
        """Make the file a fetch wrote to ``destination(name)`` usable; returns its spec."""
        spec = next(e.spec for e in self.entries() if e.spec.name == name)
        if spec.sha256:
            return spec
        try:
            return self.add(fetched, name=name, like=name if name in {s.name for s in manifest()} else None)
        finally:
            fetched.unlink(missing_ok=True)

    def place(self, name: str, fetch: Callable[[Path, str | None], str]) -> ModelSpec:
        """Get model ``name`` with ``fetch(dest, sha256)`` (a download) unless it is here already."""
        dest, sha = self.destination(name)
        if not (sha and dest.is_file() and sha256_file(dest) == sha):
            try:
                fetch(dest, sha)
            except BaseException:
                if sha is None:
                    dest.unlink(missing_ok=True)
                raise
        return self.adopt(name, dest)

    def add(
        self,
        path: Path,
        name: str | None = None,
        like: str | None = None,
        size: int | None = None,
        channels: str | None = None,
        output_range: float | None = None,
        shapes: dict[str, list[int | str | None]] | None = None,
    ) -> ModelSpec:
        """Register (copy in) a model file. A file whose sha256 is in the manifest takes that entry."""
        if not path.is_file():
            raise ModelError(f"{path} does not exist or is not a file")
        digest = sha256_file(path)
        known = {s.name: s for s in manifest()}
        base = next((s for s in known.values() if s.sha256 == digest), None)
        if base is None and like is not None:
            if like not in known:
                raise ModelError(f"--like {like!r} is not a manifest model; use one of {', '.join(known)}")
            base = known[like]
        if base is None:
            fixed = _fixed_size(shapes or {})
            base = ModelSpec(
                name="", file="", size=fixed, multiple=1 if fixed else 8, output_range=255.0 if fixed else 1.0
            )
        name = name or (base.name if base.name and not base.builtin else path.stem.lower())
        if not _NAME.match(name) or name == "builtin":
            raise ModelError(f"model name {name!r} is not allowed: use lowercase letters, digits, '.', '_' or '-'")
        if base.sha256 and base.sha256 != digest:
            raise ModelError(f"{path.name} has sha256 {digest}, not the {base.name} file ({base.sha256})")
        if channels is not None and channels not in ("rgb", "bgr"):
            raise ModelError(f"--channels must be rgb or bgr, not {channels!r}")
        spec = dataclasses.replace(
            base,
            name=name,
            file=f"{name}.onnx",
            sha256=digest,
            bytes=path.stat().st_size,
            size=base.size if size is None else size,
            multiple=1 if (base.size if size is None else size) else base.multiple,
            channels=channels or base.channels,
            output_range=base.output_range if output_range is None else output_range,
            builtin=False,
            description=base.description or f"added from {path.name}",
        )
        self.models_dir.mkdir(parents=True, exist_ok=True)
        dest = self.models_dir / spec.file
        if not (dest.exists() and dest.stat().st_size == spec.bytes and sha256_file(dest) == digest):
            tmp = dest.with_suffix(".part")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)
        users = [s for s in self._user() if s.name != name] + [spec]
        self.home.mkdir(parents=True, exist_ok=True)
        tmp_index = self.index.with_suffix(".tmp")
        tmp_index.write_text(json.dumps({"models": [dataclasses.asdict(s) for s in users]}, indent=2) + "\n")
        tmp_index.replace(self.index)
        return spec


def _fixed_size(shapes: dict[str, list[int | str | None]]) -> int:
    for shape in shapes.values():
        if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0 and shape[2] == shape[3]:
            return shape[2]
    return 0


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> str:
    """Fetch ``url`` into ``dest`` through ``dest.part`` (resumed with an HTTP Range request when a
    part is there), checking sha256 as it streams. A wrong checksum leaves no file behind."""
    import urllib.error
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    h = hashlib.sha256()
    if have:
        with part.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if have and resp.status != 206:  # the server ignored the range: start again
                have, h = 0, hashlib.sha256()
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            with part.open("ab" if have else "wb") as f:
                done = have
                while block := resp.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part is the whole file; check it
            pass
        else:
            raise ModelError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ModelError(
            f"cannot download {url}: {reason} (the part is kept; run the same command to resume)"
        ) from None
    digest = h.hexdigest()
    if sha256 and digest != sha256:
        part.unlink(missing_ok=True)
        raise ModelError(f"{url} has sha256 {digest}, expected {sha256}; the download was deleted")
    part.replace(dest)
    return digest
