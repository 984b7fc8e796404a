// lamamesh's mesh page: the same snapshot as `lamamesh status`, polled once a second from this
// node's GET /api/v1/status (which asks whoever leads now, so leader changes are followed).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function provider(n) {
  let p = (n.provider || "").toUpperCase();
  if (n.gpu) p += ` ${n.gpu}`;
  if (n.gpus && n.gpus.length > 1) p += ` (${n.gpus.length} GPUs)`;
  return p || "-";
}

function row(n) {
  const tr = document.createElement("tr");
  tr.className = n.role;
  tr.dataset.node = n.id;
  const gone = !n.alive; // dead or left: its last load figures are stale, not shown
  const ms = Object.entries(n.ewma_ms || {}).map(([k, v]) => `${k} ${Math.round(v)}`).join(", ") || "-";
  tr.append(
    cell(n.id),
    cell(`${n.host}:${n.port}`),
    cell(n.role, "role"),
    cell(provider(n)),
    cell(gone ? `-/${n.slots}` : `${n.busy}/${n.slots}`),
    cell(gone ? "-" : String(n.queued), "num"),
    cell(n.failed ? `${n.done} (${n.failed} failed)` : String(n.done), "num"),
    cell(gone ? "-" : ms, "num"),
    cell(gone ? "-" : n.rate.toFixed(2), "num"),
    cell(`${n.last_heard_s.toFixed(1)} s ago`),
  );
  return tr;
}

function summary(s) {
  const t = s.totals;
  const items = [
    [s.mesh, "mesh"],
    [s.leader || "(electing)", `leader, term ${s.term}`],
    [t.nodes, "nodes alive"],
    [`${t.busy}/${t.slots}`, "slots busy"],
    [t.gpus, `GPUs (${t.vram_mb} MiB)`],
    [t.queued, "queued"],
    [t.rate.toFixed(2), "tasks/s (last minute)"],
    [s.nodes.reduce((n, x) => n + x.done, 0), "done by the nodes listed"],
    [`${s.done}`, s.failed ? `answered by this leader, ${s.failed} failed` : "answered by this leader"],
  ];
  $("summary").replaceChildren(
    ...items.map(([v, label]) => {
      const d = document.createElement("div");
      const b = document.createElement("b");
      b.textContent = v;
      const sp = document.createElement("span");
      sp.textContent = label;
      d.append(b, sp);
      return d;
    }),
  );
}

function recent(list) {
  const body = $("recent").querySelector("tbody");
  body.replaceChildren(
    ...list
      .slice(-15)
      .reverse()
      .map((o) => {
        const tr = document.createElement("tr");
        tr.append(
          cell(new Date(o.at * 1000).toLocaleTimeString()),
          cell(o.task.slice(0, 12)),
          cell(o.node || "-"),
          cell(o.outcome, o.outcome === "ok" ? "" : "bad"),
          cell(o.ms ? o.ms.toFixed(0) : "-", "num"),
          cell(o.error || ""),
        );
        return tr;
      }),
  );
}

function render(s) {
  summary(s);
  $("nodes").replaceChildren(...s.nodes.map(row));
  $("omitted").textContent = s.omitted ? `${s.omitted} more nodes not listed (the answer stays under 64 KiB)` : "";
  recent(s.recent || []);
  $("updated").textContent = `answered by ${s.answered_by} at ${new Date(s.taken_at * 1000).toLocaleTimeString()}`;
}

async function poll() {
  try {
    const resp = await fetch("/api/v1/status", { cache: "no-store" });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    render(body);
    $("banner").style.display = "none";
  } catch (e) {
    const b = $("banner");
    b.textContent = `No answer from the mesh (${e.message}); the table shows the last one. Trying again…`;
    b.style.display = "block";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
