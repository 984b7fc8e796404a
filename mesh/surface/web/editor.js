// lamamesh's editor: brush a mask over a photo, send both through the mesh (POST /api/v1/inpaint,
// the route every client uses), show the result in place so a second pass can follow.
// Plain JS, no framework, no network beyond this node.
"use strict";

const $ = (id) => document.getElementById(id);
const stage = $("stage"), board = $("board"), imageCanvas = $("image"), maskCanvas = $("mask");
const imageCtx = imageCanvas.getContext("2d");
const maskCtx = maskCanvas.getContext("2d", { willReadFrequently: true });
const STROKE = "rgb(255, 40, 90)";
const HISTORY = 40; // undo steps kept
const WARN_SHARE = 0.5; // a mask over this share of the photo is most likely inverted

const state = {
  original: null, // {blob, bitmap, name}: the photo as opened (compare shows it)
  current: null, // {blob, bitmap}: the image the next Remove sends (the last result, after a pass)
  name: "image",
  tool: "brush",
  size: 40,
  view: { scale: 1, x: 0, y: 0 },
  undo: [],
  redo: [],
  busy: false,
  drawing: false,
  panning: null, // {x, y, vx, vy} while a pan drag is on
  space: false,
  last: null, // the stroke's previous point
};

// ---- messages ----------------------------------------------------------------------------------
function say(text, kind = "") {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
}

const HINTS = {
  no_capable_node: "No node in the mesh can run this task",
  no_mesh: "The mesh cannot be reached",
  timeout: "The mesh did not answer in time",
  overloaded: "Too large or too busy",
  model: "Model problem",
  input: "The mesh refused the input",
  failed: "The task failed",
};

function errorText(status, body) {
  const code = (body && body.code) || "";
  const detail = (body && (body.error || body.detail)) || `HTTP ${status}`;
  const hint = HINTS[code] || `Error ${status}`;
  return `${hint}: ${detail}`;
}

// ---- images ------------------------------------------------------------------------------------
async function loadBlob(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (e) {
    say(`This browser cannot show ${name || "that file"} (${blob.type || "unknown type"}): open a PNG, JPEG or WebP.`, "error");
    return;
  }
  state.original = { blob, bitmap };
  state.current = { blob, bitmap };
  state.name = (name || "image").replace(/\.[^.]*$/, "") || "image";
  state.undo = [];
  state.redo = [];
  for (const c of [imageCanvas, maskCanvas]) {
    c.width = bitmap.width;
    c.height = bitmap.height;
  }
  imageCtx.drawImage(bitmap, 0, 0);
  maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  $("empty").style.display = "none";
  fit();
  refreshButtons();
  say(`${name || "image"}: ${bitmap.width}×${bitmap.height}. Brush over what to remove, then press Remove.`);
}

function showImage(img) {
  imageCtx.clearRect(0, 0, imageCanvas.width, imageCanvas.height);
  imageCtx.drawImage(img.bitmap, 0, 0);
}

function refreshButtons() {
  const have = !!state.current;
  $("remove").disabled = !have || state.busy;
  $("compare").disabled = !have || state.current === state.original;
  $("download").disabled = !have || state.current === state.original;
  $("undo").disabled = !state.undo.length || state.busy;
  $("redo").disabled = !state.redo.length || state.busy;
}

// ---- history: a step is the image shown and the mask over it ------------------------------------
function snapshot() {
  return { image: state.current, mask: maskCtx.getImageData(0, 0, maskCanvas.width, maskCanvas.height) };
}

function remember() {
  state.undo.push(snapshot());
  if (state.undo.length > HISTORY) state.undo.shift();
  state.redo = [];
  refreshButtons();
}

function restore(step) {
  state.current = step.image;
  showImage(step.image);
  maskCtx.putImageData(step.mask, 0, 0);
  refreshButtons();
}

function undo() {
  if (!state.undo.length || state.busy) return;
  state.redo.push(snapshot());
  restore(state.undo.pop());
}

function redo() {
  if (!state.redo.length || state.busy) return;
  state.undo.push(snapshot());
  restore(state.redo.pop());
}

function clearMask() {
  if (!state.current) return;
  remember();
  maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
}

// ---- view: zoom and pan ------------------------------------------------------------------------
function applyView() {
  const v = state.view;
  board.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.scale})`;
}

function fit() {
  if (!state.current) return;
  const r = stage.getBoundingClientRect();
  const w = imageCanvas.width, h = imageCanvas.height;
  const scale = Math.min((r.width - 20) / w, (r.height - 20) / h, 4); // small photos are enlarged to brush
  state.view = { scale, x: (r.width - w * scale) / 2, y: (r.height - h * scale) / 2 };
  applyView();
}

function zoomAt(factor, cx, cy) {
  const v = state.view;
  const scale = Math.min(32, Math.max(0.05, v.scale * factor));
  const f = scale / v.scale;
  state.view = { scale, x: cx - (cx - v.x) * f, y: cy - (cy - v.y) * f };
  applyView();
}

// ---- drawing -----------------------------------------------------------------------------------
function toImage(e) {
  const r = maskCanvas.getBoundingClientRect();
  return { x: ((e.clientX - r.left) * maskCanvas.width) / r.width, y: ((e.clientY - r.top) * maskCanvas.height) / r.height };
}

function strokeTo(p) {
  maskCtx.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
  maskCtx.strokeStyle = maskCtx.fillStyle = STROKE;
  maskCtx.lineWidth = state.size;
  maskCtx.lineCap = maskCtx.lineJoin = "round";
  const a = state.last || p;
  maskCtx.beginPath();
  maskCtx.moveTo(a.x, a.y);
  maskCtx.lineTo(p.x, p.y);
  maskCtx.stroke();
  if (a === p) {
    maskCtx.beginPath();
    maskCtx.arc(p.x, p.y, state.size / 2, 0, Math.PI * 2);
    maskCtx.fill();
  }
  state.last = p;
}

function moveCursor(e) {
  const c = $("cursor");
  if (!state.current || state.panning || state.space) {
    c.style.display = "none";
    return;
  }
  const s = stage.getBoundingClientRect();
  const d = state.size * state.view.scale;
  Object.assign(c.style, {
    display: "block",
    width: `${d}px`,
    height: `${d}px`,
    left: `${e.clientX - s.left - d / 2}px`,
    top: `${e.clientY - s.top - d / 2}px`,
  });
}

stage.addEventListener("pointerdown", (e) => {
  if (!state.current) return;
  stage.setPointerCapture(e.pointerId);
  if (e.button !== 0 || state.space) {
    state.panning = { x: e.clientX, y: e.clientY, vx: state.view.x, vy: state.view.y };
    return;
  }
  if (state.busy) return;
  remember();
  state.drawing = true;
  state.last = null;
  strokeTo(toImage(e));
});
stage.addEventListener("pointermove", (e) => {
  moveCursor(e);
  if (state.panning) {
    const p = state.panning;
    state.view.x = p.vx + e.clientX - p.x;
    state.view.y = p.vy + e.clientY - p.y;
    applyView();
  } else if (state.drawing) {
    for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) strokeTo(toImage(ev));
  }
});
const endStroke = () => {
  state.drawing = false;
  state.panning = null;
  state.last = null;
};
stage.addEventListener("pointerup", endStroke);
stage.addEventListener("pointercancel", endStroke);
stage.addEventListener("pointerleave", () => ($("cursor").style.display = "none"));
stage.addEventListener("contextmenu", (e) => e.preventDefault());
stage.addEventListener(
  "wheel",
  (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  },
  { passive: false },
);

function setTool(tool) {
  state.tool = tool;
  $("brush").classList.toggle("on", tool === "brush");
  $("eraser").classList.toggle("on", tool === "eraser");
}

function setSize(n) {
  state.size = Math.max(2, Math.min(300, Math.round(n)));
  $("size").value = state.size;
  $("size-value").textContent = state.size;
}

// ---- the mask as sent: white where painted, black elsewhere, opaque ------------------------------
function maskShare() {
  const a = maskCtx.getImageData(0, 0, maskCanvas.width, maskCanvas.height).data;
  let painted = 0;
  for (let i = 3; i < a.length; i += 4) if (a[i] >= 127) painted++;
  return painted / (a.length / 4);
}

function maskBlob() {
  const src = maskCtx.getImageData(0, 0, maskCanvas.width, maskCanvas.height);
  const out = new ImageData(src.width, src.height);
  for (let i = 0; i < src.data.length; i += 4) {
    const v = src.data[i + 3] >= 127 ? 255 : 0;
    out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
    out.data[i + 3] = 255;
  }
  const c = document.createElement("canvas");
  c.width = src.width;
  c.height = src.height;
  c.getContext("2d").putImageData(out, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

// ---- Remove: one pass through the mesh ---------------------------------------------------------
async function removeObject() {
  if (!state.current || state.busy) return;
  const share = maskShare();
  if (share === 0) {
    say("The mask is empty: brush over what to remove first.", "warn");
    return;
  }
  const before = share > WARN_SHARE ? `The mask covers ${(share * 100).toFixed(1)}% of the photo (painted = filled). ` : "";
  state.busy = true;
  refreshButtons();
  say(`${before}Removing… (sent through the mesh)`, before ? "warn" : "busy");
  const started = performance.now();
  try {
    const body = JSON.stringify({
      image: await dataUrl(state.current.blob),
      mask: await dataUrl(await maskBlob()),
      model: $("model").value,
      hd_strategy: $("hd").value,
    });
    let resp;
    try {
      resp = await fetch("/api/v1/inpaint", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    } catch (e) {
      say(`This node did not answer (${e.message}): is lamamesh join still running?`, "error");
      return;
    }
    if (!resp.ok) {
      let json = null;
      try {
        json = await resp.json();
      } catch (e) {
        /* not JSON: the status line says enough */
      }
      say(errorText(resp.status, json), "error");
      return;
    }
    const blob = await resp.blob();
    const bitmap = await createImageBitmap(blob);
    remember();
    state.current = { blob, bitmap };
    showImage(state.current);
    maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    const node = resp.headers.get("X-Lamamesh-Node") || "?";
    const slot = Number(resp.headers.get("X-Lamamesh-Slot-Ms") || 0);
    const total = performance.now() - started;
    const warning = resp.headers.get("X-Lamamesh-Warning");
    const done = `Done by ${node} in ${total.toFixed(0)} ms (${slot.toFixed(0)} ms in the slot).`;
    say(warning ? `${done} Note: ${warning}` : `${done} Brush again for another pass.`, warning ? "warn" : "ok");
    $("done").textContent = `last: ${node}, ${total.toFixed(0)} ms`;
  } finally {
    state.busy = false;
    refreshButtons();
  }
}

const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/tiff": "tif", "image/bmp": "bmp" };

function download() {
  if (!state.current || state.current === state.original) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(state.current.blob);
  a.download = `${state.name}_inpainted.${EXT[state.current.blob.type] || "png"}`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function compare(on) {
  if (!state.current || state.current === state.original) return;
  showImage(on ? state.original : state.current);
  maskCanvas.style.visibility = on ? "hidden" : "";
  $("compare").classList.toggle("on", on);
}

// ---- opening photos: file, drop, paste, sample --------------------------------------------------
$("open").addEventListener("change", (e) => {
  const f = e.target.files[0];
  if (f) loadBlob(f, f.name);
  e.target.value = "";
});
stage.addEventListener("dragover", (e) => e.preventDefault());
stage.addEventListener("drop", (e) => {
  e.preventDefault();
  const f = [...e.dataTransfer.files].find((x) => x.type.startsWith("image/"));
  if (f) loadBlob(f, f.name);
  else say("That is not an image file.", "error");
});
window.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((x) => x.type.startsWith("image/"));
  if (item) loadBlob(item.getAsFile(), "pasted");
});
$("sample").addEventListener("change", async (e) => {
  const name = e.target.value;
  if (!name) return;
  const resp = await fetch(`/samples/${encodeURIComponent(name)}`);
  if (resp.ok) await loadBlob(await resp.blob(), name);
  else say(`Sample ${name} could not be read (HTTP ${resp.status}).`, "error");
  e.target.value = "";
});

async function loadChoices() {
  try {
    const samples = await (await fetch("/samples")).json();
    for (const s of samples) $("sample").add(new Option(s, s));
  } catch (e) {
    /* no samples: the menu stays empty */
  }
  try {
    const resp = await fetch("/api/v1/status");
    if (!resp.ok) return;
    const snap = await resp.json();
    const models = new Set();
    for (const n of snap.nodes || []) if (n.alive) for (const m of n.models || []) models.add(m);
    if (models.size) {
      const sel = $("model");
      sel.innerHTML = "";
      for (const m of [...models].sort()) sel.add(new Option(m, m, false, m === "builtin"));
    }
  } catch (e) {
    /* the mesh is not up yet: Remove says so when pressed */
  }
}

// ---- buttons and keys --------------------------------------------------------------------------
$("brush").onclick = () => setTool("brush");
$("eraser").onclick = () => setTool("eraser");
$("size").oninput = (e) => setSize(Number(e.target.value));
$("undo").onclick = undo;
$("redo").onclick = redo;
$("clear").onclick = clearMask;
$("fit").onclick = fit;
$("remove").onclick = removeObject;
$("download").onclick = download;
for (const [ev, on] of [["pointerdown", true], ["pointerup", false], ["pointerleave", false]]) {
  $("compare").addEventListener(ev, () => compare(on));
}

window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === "z") {
    e.preventDefault();
    e.shiftKey ? redo() : undo();
  } else if ((e.ctrlKey || e.metaKey) && k === "y") {
    e.preventDefault();
    redo();
  } else if (e.ctrlKey || e.metaKey || e.altKey) {
    return;
  } else if (e.key === "[") setSize(state.size - Math.max(2, state.size * 0.1));
  else if (e.key === "]") setSize(state.size + Math.max(2, state.size * 0.1));
  else if (k === "b") setTool("brush");
  else if (k === "e") setTool("eraser");
  else if (k === "0") fit();
  else if (k === "enter") removeObject();
  else if (k === "c" && !e.repeat) compare(true);
  else if (e.key === " ") {
    state.space = true;
    stage.classList.add("pan");
    e.preventDefault();
  }
});
window.addEventListener("keyup", (e) => {
  if (e.key.toLowerCase() === "c") compare(false);
  if (e.key === " ") {
    state.space = false;
    stage.classList.remove("pan");
  }
});
window.addEventListener("resize", fit);

loadChoices();
