"""The CLI as a user runs it: subprocesses on real photos, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import box_mask, photo

EXE = [sys.executable, "-m", "mesh"]


def run(*args: str, timeout: float = 90, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("lamamesh:")]
    assert lines, p.stderr
    return lines[-1]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[int]:
    """A ``lamamesh join`` process on an ephemeral port; yields its task port."""
    log = tmp_path / "join.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [
                *EXE,
                "join",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--slots",
                "1",
                "--device",
                "cpu",
                "--log-level",
                "info",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LAMAMESH_HOME": str(tmp_path / "home")},
        )
    try:
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline and port is None:
            m = re.search(r"tasks on 127\.0\.0\.1:(\d+)", log.read_text())
            port = int(m.group(1)) if m else None
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert port, log.read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        text = log.read_text()
        assert "Traceback" not in text, text
        assert "stopped" in text


def test_join_then_submit_single(
    node: int, photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ip, mp, img, mask = photo_files
    out = tmp_path / "out.png"
    p = run("submit", str(ip), str(mp), "-o", str(out), "--peer", f"127.0.0.1:{node}", "--no-local")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout
    res = np.asarray(Image.open(out))
    assert (res[~mask] == img[~mask]).all() and not (res[mask] == img[mask]).all()
    st = run("status", "--json", "--peer", f"127.0.0.1:{node}")
    assert st.returncode == 0, st.stderr
    import json

    snap = json.loads(st.stdout)
    assert {"mesh", "leader", "term", "nodes"} <= snap.keys()
    assert {"id", "host", "port", "role", "alive", "provider", "slots", "busy", "queued", "done"} <= snap["nodes"][
        0
    ].keys()
    assert snap["nodes"][0]["port"] == node and snap["nodes"][0]["done"] == 1


def test_submit_to_a_mesh_loads_no_node_and_no_numpy(
    node: int, photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A submit that finds a mesh imports neither the embedded node (zeroconf, psutil, the scheduler)
    nor numpy: together ~0.3 s of a `lamamesh submit` here (0.99 -> 0.69 s, 8 runs each)."""
    ip, mp, _, _ = photo_files
    cmd = [sys.executable, "-X", "importtime", *EXE[1:], "submit", str(ip), str(mp), "-o", str(tmp_path / "o.png")]
    p = subprocess.run([*cmd, "--peer", f"127.0.0.1:{node}", "--no-local"], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "mesh.surface.client" in loaded  # the listing is read right
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("numpy", "zeroconf", "psutil") or "mesh.cluster" in m)
    assert heavy == [], heavy


def test_masks_people_export_from_editors(
    node: int, photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Red strokes on a transparent layer at half the photo's size (before: exit 0, nothing changed
    and no word), and an inverted mask (before: 97% of the photo filled, no word)."""
    ip, _, img, mask = photo_files
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[90:130, 100:165] = (230, 20, 20, 255)  # the box of photo_files, at half size
    red = tmp_path / "red.png"
    Image.fromarray(layer, "RGBA").save(red)
    out = tmp_path / "out.png"
    p = run("submit", str(ip), str(red), "-o", str(out), "--peer", f"127.0.0.1:{node}", "--no-local")
    assert p.returncode == 0, p.stderr
    warned = [ln for ln in p.stderr.splitlines() if ln.startswith("lamamesh: warning:")]
    assert warned == [
        "lamamesh: warning: the mask is 256x256 and the image 512x512: the mask was resized to the image (nearest)"
    ]
    res = np.asarray(Image.open(out))
    assert (res[~mask] == img[~mask]).all() and not (res[mask] == img[mask]).all()

    inverted = tmp_path / "inverted.png"
    Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(inverted)
    p = run("submit", str(ip), str(inverted), "-o", str(out), "--peer", f"127.0.0.1:{node}", "--no-local")
    assert p.returncode == 0, p.stderr
    assert "lamamesh: warning: the mask covers 96.0% of the image" in p.stderr and "invert the mask" in p.stderr


def test_batch_with_mask_dir_and_progress(node: int, tmp_path: Path) -> None:
    imgs, masks, outd = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    imgs.mkdir()
    masks.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        a = photo(name)
        Image.fromarray(a).save(imgs / f"{name}.jpg", quality=92)
        Image.fromarray(box_mask(a.shape[0], a.shape[1], (40, 50, 120, 110))).save(masks / f"{name}.png")
    Image.fromarray(photo("astronaut")).save(imgs / "lonely.png")  # no mask: skipped with a line
    outd.mkdir()
    (outd / ".coffee.jpg.part").write_bytes(b"half")  # what a killed submit leaves (finding 8 of #14)
    p = run("submit", str(imgs), str(masks), "-o", str(outd), "--peer", f"127.0.0.1:{node}")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in outd.iterdir()) == ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert "removed 1 unfinished file(s)" in p.stderr
    assert "skipping lonely.png" in p.stderr
    assert "3 of 3 inpainted" in p.stdout
    # a photo that cannot be read when its turn comes (files are read as the batch goes): one
    # failure line, the others still done, exit 1
    (imgs / "broken.png").symlink_to("/proc/self/mem")  # a regular file whose read fails (EIO)
    Image.fromarray(box_mask(64, 64, (8, 8, 20, 20))).save(masks / "broken.png")
    p = run("submit", str(imgs), str(masks), "-o", str(outd / "2"), "--peer", f"127.0.0.1:{node}")
    assert p.returncode == 1, p.stderr
    assert "failed broken.png: cannot read image" in p.stderr and "Traceback" not in p.stderr
    assert "3 of 4 inpainted" in p.stdout and "1 failed" in p.stdout
    (imgs / "broken.png").unlink()


def test_a_batch_resumes_and_never_writes_over_its_inputs(node: int, tmp_path: Path) -> None:
    """Issue 15: the same command again skips what is written (outputs are atomic), --overwrite
    redoes it; an output folder that is the input folder is refused; an empty folder is named as such."""
    imgs, masks, outd = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    imgs.mkdir()
    masks.mkdir()
    (imgs / "sub").mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        a = photo(name)[:128, :160]
        Image.fromarray(a).save(imgs / f"{name}.png")
        Image.fromarray(box_mask(a.shape[0], a.shape[1], (40, 50, 80, 110))).save(masks / f"{name}.png")
    peer = ("--peer", f"127.0.0.1:{node}")
    first = run("submit", str(imgs), str(masks), "-o", str(outd), *peer)
    assert first.returncode == 0 and "3 of 3 inpainted" in first.stdout, first.stderr
    assert "subfolders are not processed (--recursive does): sub" in first.stderr
    assert re.search(r"lamamesh: 3 of 3 done in \d+ s \([\d.]+/s\)", first.stderr), first.stderr  # not a terminal
    (outd / "rocket.png").unlink()  # as if the first run had been killed before writing it
    stamp = (outd / "coffee.png").stat().st_mtime_ns
    again = run("submit", str(imgs), str(masks), "-o", str(outd), *peer)
    assert again.returncode == 0, again.stderr
    assert "2 of 3 already in" in again.stderr and "1 of 1 inpainted" in again.stdout, (again.stderr, again.stdout)
    assert (outd / "rocket.png").is_file() and (outd / "coffee.png").stat().st_mtime_ns == stamp
    redo = run("submit", str(imgs), str(masks), "-o", str(outd), "--overwrite", *peer)
    assert "3 of 3 inpainted" in redo.stdout and (outd / "coffee.png").stat().st_mtime_ns != stamp
    same = run("submit", str(imgs), str(masks), "-o", str(imgs), *peer)
    assert same.returncode == 2 and "is an input folder" in one_line_error(same)
    single = run("submit", str(imgs / "coffee.png"), str(masks / "coffee.png"), "-o", str(imgs / "coffee.png"), *peer)
    assert single.returncode == 2 and "is an input" in one_line_error(single)
    # --recursive: a subfolder's photo (its mask at the same place under MASKS) goes to the same place under OUT
    Image.fromarray(photo("coffee")[:128, :160]).save(imgs / "sub" / "deep.png")
    (masks / "sub").mkdir()
    Image.fromarray(box_mask(128, 160, (40, 50, 80, 110))).save(masks / "sub" / "deep.png")
    rec = run("submit", str(imgs), str(masks), "-o", str(outd), "--recursive", *peer)
    assert rec.returncode == 0 and "3 of 4 already in" in rec.stderr and "1 of 1 inpainted" in rec.stdout, rec.stderr
    assert (outd / "sub" / "deep.png").is_file() and not (outd / "deep.png").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run("submit", str(empty), str(masks), "-o", str(outd), *peer)
    assert none.returncode == 2 and "holds no image" in one_line_error(none)


def test_bad_input_is_one_line_with_the_right_code(
    node: int, photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ip, mp, _img, _ = photo_files
    peer = ["--peer", f"127.0.0.1:{node}", "--no-local"]
    junk = tmp_path / "junk.jpg"
    junk.write_text("this is not a picture")
    full = tmp_path / "full.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(full)  # another size (resized) and all white
    cases = [
        (["submit", str(tmp_path / "missing.jpg"), str(mp)], 2, "does not exist"),
        (["submit", str(junk), str(mp)], 2, "not an image"),
        (["submit", str(ip), str(full)], 2, "the mask covers the whole image"),
        (["submit", str(ip), str(mp), "--model", "nope"], 2, "unknown model"),
        (["submit", str(ip), str(mp), "-o", str(tmp_path / "x.gif2")], 2, "cannot write"),
        (["submit", str(ip), str(mp), "--priority", "urgent"], 2, "priority"),
    ]
    for args, code, text in cases:
        p = run(*args, *peer, "-o", str(tmp_path / "o.png")) if "-o" not in args else run(*args, *peer)
        assert p.returncode == code, (args, p.stderr)
        assert text in one_line_error(p), p.stderr
    # the node is still fine
    p = run("submit", str(ip), str(mp), "-o", str(tmp_path / "ok.png"), *peer)
    assert p.returncode == 0, p.stderr


def test_port_in_use_and_no_mesh(
    node: int, photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    p = run("join", "--bind", "127.0.0.1", "--port", str(node), "--slots", "1")
    assert p.returncode == 2 and "already in use" in one_line_error(p)
    ip, mp, _, _ = photo_files
    p = run("submit", str(ip), str(mp), "--peer", "127.0.0.1:1", "--no-local", "-o", str(tmp_path / "x.png"))
    assert p.returncode == 3 and "no lamamesh node answered" in one_line_error(p)


def test_submit_with_no_mesh_runs_locally(
    photo_files: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ip, mp, img, mask = photo_files
    out = tmp_path / "local.webp"
    env = {**os.environ, "LAMAMESH_HOME": str(tmp_path / "home"), "LAMAMESH_PORT": "1"}
    p = run("submit", str(ip), str(mp), "-o", str(out), env=env)
    assert p.returncode == 0, p.stderr
    assert "embedded local node" in p.stderr
    res = np.asarray(Image.open(out).convert("RGB"))
    assert (res[~mask] == img[~mask]).all()  # lossless WebP keeps every pixel


def test_models_add_and_list(tmp_path: Path) -> None:
    from .standin import build

    src = build(tmp_path / "lama_like.onnx")
    env = {**os.environ, "LAMAMESH_HOME": str(tmp_path / "home")}
    p = run("models", "add", str(src), "--name", "mylama", env=env)
    assert p.returncode == 0, p.stderr
    assert "512x512" in p.stdout
    p = run("models", "list", env=env)
    assert p.returncode == 0 and "mylama" in p.stdout and "builtin" in p.stdout
    p = run("models", "add", str(tmp_path / "nothing.onnx"), env=env)
    assert p.returncode == 2 and "does not exist" in one_line_error(p)


def forty_photos(tmp_path: Path, node: int, seed: int) -> tuple[Path, list[str]]:
    """40 random photos with box masks; returns the output folder and the `submit` command line."""
    imgs, masks, outd = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(seed)
    for k in range(40):
        Image.fromarray((rng.random((192, 256, 3)) * 255).astype(np.uint8)).save(imgs / f"p{k:02d}.png")
        Image.fromarray(box_mask(192, 256, (40, 50, 120, 140))).save(masks / f"p{k:02d}.png")
    return outd, [*EXE, "submit", str(imgs), str(masks), "-o", str(outd), "--peer", f"127.0.0.1:{node}"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def until_outputs(outd: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(list(outd.glob("*.png"))) < n:
        time.sleep(0.05)
    assert len(list(outd.glob("*.png"))) >= n, f"fewer than {n} outputs within {timeout} s"


def test_ctrl_c_on_a_batch_says_how_far_it_got_and_the_same_command_finishes_it(node: int, tmp_path: Path) -> None:
    outd, cmd = forty_photos(tmp_path, node, seed=5)
    # Ctrl-C as a terminal sends it, even when this test runs in a background job (`cmd &` starts
    # with SIGINT ignored, and a child inherits that: the batch then ran to the end)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        until_outputs(outd, 3)
        proc.send_signal(signal.SIGINT)
        _, se = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 130, se
    m = re.search(r"stopped; (\d+) of 40 written to .*; run the same command to continue", se)
    assert m and "Traceback" not in se, se
    written = len(list(outd.glob("*.png")))
    assert int(m.group(1)) <= written < 40
    # the client told the leader as it stopped: its queued tasks are dropped now, not 6 s later
    st = run("status", "--json", "--peer", f"127.0.0.1:{node}")
    outcomes = json.loads(st.stdout)["outcomes"]
    assert outcomes.get("cancelled", 0) > 0 and "abandoned" not in outcomes, outcomes
    again = run(*cmd[3:])
    assert again.returncode == 0 and f"{40 - written} of {40 - written} inpainted" in again.stdout, again.stderr
    assert len(list(outd.glob("*.png"))) == 40


def test_a_killed_batch_reruns_without_rewriting_and_the_leader_drains_its_queue(node: int, tmp_path: Path) -> None:
    """Issue 15: SIGKILL mid-batch (no goodbye at all), the same command again: every output is
    written exactly once (the earlier ones keep their mtimes) and the dead client's queue drains."""
    outd, cmd = forty_photos(tmp_path, node, seed=6)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until_outputs(outd, 3)
    finally:
        proc.kill()
        proc.wait(10)
    before = {p.name: p.stat().st_mtime_ns for p in outd.glob("*.png")}
    assert 3 <= len(before) < 40 and not list(outd.glob(".*.part"))
    again = run(*cmd[3:])
    assert again.returncode == 0 and f"{len(before)} of 40 already in" in again.stderr, again.stderr
    assert len(list(outd.glob("*.png"))) == 40
    assert {n: (outd / n).stat().st_mtime_ns for n in before} == before  # none rewritten

    def drained() -> dict:
        st = json.loads(run("status", "--json", "--peer", f"127.0.0.1:{node}").stdout)
        return st if st["queued"] == 0 and st["outcomes"].get("abandoned", 0) > 0 else {}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not drained():
        time.sleep(0.2)
    assert drained(), "the dead client's tasks were not dropped"


def test_exif_and_icc_survive_the_mesh_jpeg_to_jpeg_and_to_png(node: int, tmp_path: Path) -> None:
    from PIL import ImageCms

    a = photo("coffee")[:192, :256]
    exif = Image.Exif()
    exif[0x0132] = "2026:12:02 10:00:00"  # DateTime
    exif[0x0110] = "Test Camera"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "photo.jpg"
    Image.fromarray(a).save(src, quality=80, exif=exif.tobytes(), icc_profile=icc)
    mask = tmp_path / "mask.png"
    Image.fromarray(box_mask(192, 256, (40, 50, 120, 140))).save(mask)
    for out in (tmp_path / "out.jpg", tmp_path / "out.png"):
        p = run("submit", str(src), str(mask), "-o", str(out), "--peer", f"127.0.0.1:{node}")
        assert p.returncode == 0, p.stderr
        with Image.open(out) as im:
            got = im.getexif()
            assert got.get(0x0132) == "2026:12:02 10:00:00" and got.get(0x0110) == "Test Camera", out.name
            assert im.info.get("icc_profile") == icc, out.name
