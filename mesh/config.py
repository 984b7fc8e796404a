"""One frozen configuration object, built by the CLI alone.

Precedence: command-line flags > ``LAMAMESH_*`` environment > TOML config file > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh import const
from mesh.errors import ConfigError
from mesh.kinds import Policy

ENV_PREFIX = "LAMAMESH_"


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lamamesh"


@dataclass(frozen=True)
class Config:
    mesh: str = "default"  # mesh name: nodes of other meshes are ignored
    peers: tuple[str, ...] = ()  # HOST:PORT of nodes to reach directly (task ports)
    slots: int = 0  # slot processes; 0 = from the hardware
    device: str = "auto"  # auto | cpu | cuda
    gpus: str = ""  # which NVIDIA GPUs get a slot each: "" / "all", "none", or indexes "0,2"
    cpu_slots: int = 0  # CPU slots beside the GPU ones (a machine with GPUs runs none unless asked)
    bind: str = "0.0.0.0"  # interface to listen on
    port: int = const.DEFAULT_TASK_PORT  # task port; the backend takes port + 1; 0 = ephemeral
    http: int = 0  # HTTP port; 0 = off
    http_bind: str = "127.0.0.1"  # the HTTP surface stays on this machine unless told otherwise
    secret_file: str = ""
    home: Path = dataclasses.field(default_factory=default_home)  # models and registry live here
    log_level: str = "info"
    log_json: bool = False  # one JSON object per log line (for journald, Loki, jq)
    max_pixels: int = const.MAX_IMAGE_PIXELS  # pixels of a decoded image or mask (decompression bombs)
    max_frame_bytes: int = const.MAX_FRAME_BYTES  # bytes of one image or result frame on the wire
    max_queued_per_client: int = const.MAX_QUEUED_PER_CLIENT  # tasks one client may have queued at the leader
    max_members: int = const.MAX_MEMBERS  # members a node keeps in its view (a flood of fake ids stops there)
    max_result_bytes: int = const.MAX_RESULT_BYTES  # bytes of one encoded result
    shutdown_grace: float = const.SHUTDOWN_GRACE  # s
    advertise: str = ""  # address peers reach this node at; "" = --bind, or this machine's LAN address
    copy_models: bool = True  # copy models that peers hold and this node lacks (checksums verified)
    mdns: bool = True  # discover and advertise over mDNS (off: only --peer)
    heartbeat_interval: float = const.HEARTBEAT_INTERVAL  # s
    dead_timeout: float = const.DEAD_TIMEOUT  # s
    election_wait: float = const.ELECTION_WAIT  # s
    placement: str = Policy.COMPLETION  # completion | least-loaded (the contrast the benchmarks show)
    bench_delay_ms: float = -1.0  # BENCHMARK ONLY: >= 0 replaces the model by a sleep of this many ms (0: a null task)

    @property
    def local_host(self) -> str:
        """The address a process on this machine uses to reach this node."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "", "*") else self.bind


_HINTS = typing.get_type_hints(Config)


def _coerce(name: str, value: Any, source: str) -> Any:
    hint = _HINTS[name]
    try:
        if hint is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is Path:
            return Path(str(value)).expanduser()
        if hint == tuple[str, ...]:
            if isinstance(value, str):
                return tuple(p.strip() for p in value.split(",") if p.strip())
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def build(flags: Mapping[str, Any], env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Config:
    """Merge the layers; ``flags`` holds only what the user gave (None values are ignored)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        section = data.get("lamamesh", data)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in _HINTS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            merged[name] = _coerce(name, value, f"config file {path}")
    for name in _HINTS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            merged[name] = _coerce(name, raw, f"environment {ENV_PREFIX}{name.upper()}")
    for name, value in flags.items():
        if value is None or (name == "peers" and not value):
            continue
        merged[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    cfg = Config(**merged)
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    """Refuse values no node can run with, one line each."""
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {cfg.device!r}")
    if not 0 <= cfg.port <= 65534:
        raise ConfigError(f"port must be between 0 and 65534, not {cfg.port}")
    if cfg.placement not in tuple(Policy):
        raise ConfigError(f"placement must be completion or least-loaded, not {cfg.placement!r}")
    if not 0.05 <= cfg.heartbeat_interval <= cfg.dead_timeout / 2:
        raise ConfigError(
            f"heartbeat interval {cfg.heartbeat_interval:g} s must be at least 0.05 s and at most half "
            f"the dead timeout ({cfg.dead_timeout:g} s)"
        )
    if cfg.slots < 0:
        raise ConfigError(f"slots must be 0 (automatic) or more, not {cfg.slots}")
    if not 0 <= cfg.cpu_slots <= 64:
        raise ConfigError(f"cpu slots must be from 0 to 64, not {cfg.cpu_slots}")
    for peer in cfg.peers:
        parse_peer(peer)


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"peer {text!r} should be HOST:PORT (the node's task port, e.g. 192.168.1.20:5555)")
    return host.strip("[]"), int(port)
