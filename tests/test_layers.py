"""The package's layers, checked: imports run one way (surface -> cluster -> control / execute -> wire -> base).

Walks every module's imports (top level and inside functions, TYPE_CHECKING blocks included) with
``ast``, so an upward import fails here, in CI, whatever the code path that would reach it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mesh"
BASE = {"const", "errors", "config", "kinds", "frozen", "aio", "malloc", "__init__", "__main__"}
RANK = {"base": 0, "wire": 1, "control": 2, "execute": 2, "cluster": 3, "surface": 4}


def layer(module: str) -> str:
    """``mesh.wire.protocol`` -> ``wire``; ``mesh.const`` -> ``base``."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in RANK:
        return parts[1]
    return "base"


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    here = "mesh." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mesh"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: -node.level]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "mesh":
                continue
            if mod in ("mesh", "mesh.wire", "mesh.control", "mesh.execute", "mesh.cluster", "mesh.surface"):
                found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, mod))
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        own = "base" if len(rel.parts) == 1 else rel.parts[0]
        if own == "base" and rel.stem in ("__init__", "__main__"):
            continue  # the package's lazy re-exports and `python -m mesh` sit above every layer
        for lineno, target in imports(path):
            other = layer(target)
            if RANK[other] > RANK[own] or (RANK[other] == RANK[own] and other != own):
                bad.append(f"mesh/{rel}:{lineno}: {own} imports {target} ({other})")
    return bad


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an upward import in a wire module is reported."""
    fake = PACKAGE / "wire" / "_upward_probe.py"
    fake.write_text("from mesh.surface import client\n")
    try:
        assert any("_upward_probe" in v for v in violations())
    finally:
        fake.unlink()


def test_the_client_does_not_drag_in_the_node() -> None:
    code = (
        "import sys, mesh.surface.client; "
        "bad = [m for m in sys.modules if m.startswith(('zeroconf', 'mesh.cluster', 'psutil', 'onnxruntime'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
