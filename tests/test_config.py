from __future__ import annotations

from pathlib import Path

import pytest

from mesh import config
from mesh.errors import ConfigError


def test_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    f = tmp_path / "lamamesh.toml"
    f.write_text('[lamamesh]\nmesh = "from-file"\nslots = 3\nport = 6000\ndevice = "cpu"\n')
    env = {"LAMAMESH_SLOTS": "5", "LAMAMESH_PORT": "7000"}
    cfg = config.build({"port": 8000, "mesh": None}, env, f)
    assert cfg.mesh == "from-file"  # file beats default
    assert cfg.slots == 5  # env beats file
    assert cfg.port == 8000  # flag beats env
    assert cfg.device == "cpu"
    assert config.build({}, {}).port == 5555


def test_peers_from_env_and_flags() -> None:
    assert config.build({}, {"LAMAMESH_PEERS": "a:1, b:2"}).peers == ("a:1", "b:2")
    assert config.build({"peers": ("c:3",)}, {"LAMAMESH_PEERS": "a:1"}).peers == ("c:3",)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"port": "x"}, "port"),
        ({"device": "tpu"}, "device"),
        ({"peers": ("nohost",)}, "HOST:PORT"),
        ({"slots": -1}, "slots"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_values_are_one_clear_error(flags: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config.build(flags, {})


def test_bad_config_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("mesh = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.build({}, {}, f)
    f.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        config.build({}, {}, f)
    with pytest.raises(ConfigError, match="config file"):
        config.build({}, {}, tmp_path / "missing.toml")
