"""The web pages in a real browser: headless Chromium (Debian's package) driven by Playwright.

A stroke is drawn with real mouse events on the canvas, Remove sends it through a real node, and the
pixels are read back from the page. ``LAMAMESH_SHOTS=docs/img`` also saves the screenshots README
shows (the same harness renders them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mesh.surface.demo import free_port_block

from .cluster import Cluster, NodeProc, cluster, png, wait_mesh
from .conftest import photo

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no browser: apt-get install chromium (.ci/run does)")

SHOTS = os.environ.get("LAMAMESH_SHOTS", "")
_box = np.zeros((128, 128), np.uint8)
_box[40:70, 50:90] = 255
_MASK = base64.b64encode(png(_box)).decode()

# pixels of the image canvas and of the mask canvas, as the page holds them
GRAB = """() => { const g = (id) => { const c = document.getElementById(id);
  return c.getContext('2d').getImageData(0, 0, c.width, c.height).data; };
  window.__image = g('image'); window.__mask = g('mask'); }"""
# how many pixels changed inside the painted area and outside it since GRAB
CHANGED = """() => { const c = document.getElementById('image');
  const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const was = window.__image, mask = window.__mask;
  let inside = 0, insideChanged = 0, outsideChanged = 0;
  for (let i = 0; i < now.length; i += 4) {
    const changed = now[i] !== was[i] || now[i + 1] !== was[i + 1] || now[i + 2] !== was[i + 2];
    if (mask[i + 3] >= 127) { inside++; if (changed) insideChanged++; } else if (changed) outsideChanged++;
  }
  return {inside, insideChanged, outsideChanged}; }"""
PAINTED = """() => { const c = document.getElementById('mask');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, sx = 0, sy = 0;
  for (let i = 3; i < d.length; i += 4) {
    if (d[i] >= 127) { n++; const p = (i - 3) / 4; sx += p % c.width; sy += Math.floor(p / c.width); }
  }
  return {n, x: n ? sx / n : -1, y: n ? sy / n : -1}; }"""


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def mesh_with_http(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    """One node serving HTTP (a pixel limit low enough to test) and a second one to share the work."""
    port = free_port_block(1)
    with cluster(tmp_path, env={"LAMAMESH_MAX_PIXELS": "200000"}) as c:
        c.start(1, args=["--http", str(port), "--slots", "1"])
        c.start(1, args=["--slots", "1"])
        wait_mesh(c, 2)
        yield c, f"http://127.0.0.1:{port}"
        for n in c.nodes:
            assert "Traceback" not in n.text(), n.text()


def _open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1200, "height": 820}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


def _stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """A brush stroke with real mouse events, points as fractions of the canvas on screen."""
    box = page.locator("#mask").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def _remove(page: Any) -> str:
    """Press Remove, wait for the page's answer; returns its message (class ok, warn or error)."""
    page.evaluate("document.getElementById('message').className = ''")
    page.click("#remove")
    page.wait_for_function(
        "['ok', 'error'].includes(document.getElementById('message').className) || "
        "(document.getElementById('message').className === 'warn' && !document.getElementById('message')"
        ".textContent.endsWith('mesh)'))",
        timeout=60_000,
    )
    return str(page.text_content("#message"))


def test_brush_remove_undo_second_pass_and_download(
    browser: Any, mesh_with_http: tuple[Cluster, str], tmp_path: Path
) -> None:
    _, base = mesh_with_http
    img = photo("astronaut")[::2, ::2].copy()  # 256x256
    src = tmp_path / "photo.png"
    Image.fromarray(img).save(src)
    page, errors = _open_page(browser, base + "/")
    page.set_input_files("#open", str(src))  # the Open… button's file input
    page.wait_for_function("!document.getElementById('remove').disabled")
    # the model menu lists what the mesh holds
    page.wait_for_function("[...document.querySelectorAll('#model option')].some(o => o.value === 'builtin')")

    # zoom in one notch at the centre (the stroke must still land where the pointer is), then brush
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.keyboard.press("]")  # bigger brush, from the keyboard
    assert int(page.text_content("#size-value") or 0) > 40
    _stroke(page, [(0.40, 0.45), (0.55, 0.47), (0.60, 0.55)])
    painted = page.evaluate(PAINTED)
    assert painted["n"] > 500
    assert abs(painted["x"] - 0.52 * 256) < 12 and abs(painted["y"] - 0.49 * 256) < 12, painted

    page.evaluate(GRAB)
    msg = _remove(page)
    assert msg.startswith("Done by vm-") or msg.startswith("Done by "), msg
    changed = page.evaluate(CHANGED)
    assert changed["outsideChanged"] == 0, changed
    assert changed["insideChanged"] > 0.5 * changed["inside"], changed
    assert page.evaluate(PAINTED)["n"] == 0  # the mask is cleared for the next pass
    if SHOTS:
        page.keyboard.press("0")  # fit the photo in the window
        page.screenshot(path=str(Path(SHOTS) / "editor.png"))

    # undo brings back the photo and the stroke; redo the result
    page.keyboard.press("Control+z")
    assert page.evaluate(PAINTED)["n"] == painted["n"]
    assert page.evaluate(CHANGED)["insideChanged"] == 0
    page.keyboard.press("Control+Shift+z")
    assert page.evaluate(CHANGED)["insideChanged"] == changed["insideChanged"]

    # a second pass on the result: only the new stroke changes
    page.evaluate(GRAB)
    _stroke(page, [(0.20, 0.20), (0.30, 0.25)])
    page.evaluate(GRAB.replace("window.__image = g('image'); ", ""))
    assert "Done by" in _remove(page)
    second = page.evaluate(CHANGED)
    assert second["outsideChanged"] == 0 and second["insideChanged"] > 0.5 * second["inside"], second

    # download: the input's format and name, the pixels shown
    with page.expect_download() as dl:
        page.click("#download")
    assert dl.value.suggested_filename == "photo_inpainted.png"
    got = np.asarray(Image.open(dl.value.path()).convert("RGB"))
    assert got.shape == img.shape
    differs = (got != img).any(axis=2)
    assert differs.sum() > 0.5 * (changed["inside"] + second["inside"])
    assert not errors, errors


def test_api_errors_reach_the_page_as_one_readable_line(
    browser: Any, mesh_with_http: tuple[Cluster, str], tmp_path: Path
) -> None:
    _, base = mesh_with_http
    page, errors = _open_page(browser, base + "/")
    small = tmp_path / "small.png"
    Image.fromarray(photo("coffee")[:32:, :48]).save(small)
    page.set_input_files("#open", str(small))
    page.wait_for_function("!document.getElementById('remove').disabled")

    # an empty mask is refused by the page itself, before anything is sent
    msg = _remove(page)
    assert page.get_attribute("#message", "class") == "warn" and "mask is empty" in msg

    # a mask covering everything: the page warns first, then shows the mesh's refusal
    page.fill("#size", "300")
    page.dispatch_event("#size", "input")
    _stroke(page, [(0.5, 0.5)])
    msg = _remove(page)
    assert page.get_attribute("#message", "class") == "error"
    assert msg.startswith("The mesh refused the input: the mask covers the whole image"), msg

    # no node holds the chosen model (a model the registry knows, not downloaded anywhere)
    page.keyboard.press("Control+z")
    _stroke(page, [(0.2, 0.2), (0.3, 0.3)])
    page.evaluate(
        "(() => { const s = document.getElementById('model'); s.add(new Option('lama', 'lama')); s.value = 'lama'; })()"
    )
    msg = _remove(page)
    assert page.get_attribute("#message", "class") == "error"
    assert msg.startswith("No node in the mesh can run this task:") and "lama" in msg, msg

    # an image over the mesh's pixel limit (the nodes run with 200,000)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((400, 600, 3), np.uint8)).save(big)
    page.set_input_files("#open", str(big))
    page.wait_for_function("document.getElementById('image').width === 600")
    page.select_option("#model", "builtin")
    _stroke(page, [(0.4, 0.4), (0.5, 0.5)])
    msg = _remove(page)
    assert page.get_attribute("#message", "class") == "error"
    assert "240,000 pixels, over the limit of 200,000" in msg, msg
    assert not errors, errors


ROLE_OF = """(addr) => [...document.querySelectorAll('#nodes tr')]
  .find((tr) => tr.children[1].textContent === addr)?.className || ''"""


def _wait_role(page: Any, node: NodeProc, role: str) -> None:
    page.wait_for_function(f"(addr) => ({ROLE_OF})(addr) === {role!r}", arg=f"127.0.0.1:{node.port}", timeout=30_000)


def _role(page: Any, node: NodeProc) -> str:
    return str(page.evaluate(ROLE_OF, f"127.0.0.1:{node.port}"))


def test_mesh_page_lists_nodes_and_marks_dead_and_left(browser: Any, tmp_path: Path) -> None:
    port = free_port_block(1)
    with cluster(tmp_path) as c:
        (front,) = c.start(1, args=["--http", str(port), "--slots", "1"])
        killed, stopped = c.start(2, args=["--slots", "1"])
        wait_mesh(c, 3)
        body = json.dumps({"image": base64.b64encode(png(photo()[::4, ::4])).decode(), "mask": _MASK}).encode()
        for _ in range(6):  # some work for the page to show
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/inpaint", body, method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                assert r.status == 200
        page, errors = _open_page(browser, f"http://127.0.0.1:{port}/mesh")
        page.wait_for_function("document.querySelectorAll('#nodes tr').length === 3", timeout=30_000)
        assert page.locator("#nodes tr.leader").count() == 1
        assert "3nodes alive" in str(page.text_content("#summary"))
        page.wait_for_function("document.querySelectorAll('#recent tbody tr').length === 6", timeout=30_000)

        killed.kill(signal.SIGKILL)  # no word: dead
        _wait_role(page, killed, "dead")
        dead = page.locator("#nodes tr.dead td")
        assert dead.nth(5).text_content() == "-" and dead.nth(8).text_content() == "-"  # no stale load figures

        stopped.kill(signal.SIGINT)  # says goodbye: left
        _wait_role(page, stopped, "left")
        assert _role(page, front) in ("leader", "worker") and _role(page, killed) == "dead"
        page.wait_for_function("document.querySelectorAll('#nodes tr.leader').length === 1", timeout=30_000)
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "mesh.png"))
        assert not errors, errors


def test_a_photo_comes_in_by_sample_drop_and_paste(browser: Any, mesh_with_http: tuple[Cluster, str]) -> None:
    """The three other ways in besides the Open button: the bundled samples menu, a file dropped on
    the canvas, an image pasted from the clipboard (real DOM events with a DataTransfer)."""
    _, base = mesh_with_http
    page, errors = _open_page(browser, base + "/")
    page.wait_for_function("document.querySelectorAll('#sample option').length > 1")
    page.select_option("#sample", "chelsea.jpg")
    page.wait_for_function("document.getElementById('image').width === 451")
    assert "chelsea.jpg: 451×300" in str(page.text_content("#message"))

    make = """async (kind) => {
      const blob = await (await fetch('/samples/coffee.jpg')).blob();
      const dt = new DataTransfer();
      dt.items.add(new File([blob], 'coffee.jpg', {type: 'image/jpeg'}));
      if (kind === 'drop') {
        document.getElementById('stage').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
      } else {
        window.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
      }
    }"""
    page.evaluate(make, "drop")
    page.wait_for_function("document.getElementById('image').width === 600")
    assert str(page.text_content("#message")).startswith("coffee.jpg: 600×400")
    page.select_option("#sample", "chelsea.jpg")
    page.wait_for_function("document.getElementById('image').width === 451")
    page.evaluate(make, "paste")
    page.wait_for_function("document.getElementById('image').width === 600")
    assert str(page.text_content("#message")).startswith("pasted: 600×400")
    assert not errors, errors
