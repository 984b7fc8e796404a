"""``lamamesh status``: the live screen (Textual).

The app only renders: it asks for a ``Snapshot`` every ``STATUS_REFRESH`` seconds through
the function it is given (``Client.snapshot``, which follows the leader when it changes)
and redraws from that immutable value. Losing the mesh shows the reason and keeps trying.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from mesh import const
from mesh.errors import MeshError
from mesh.surface.snapshot import NODE_COLUMNS, Snapshot, node_cells, summary

RECENT_COLUMNS = ("time", "task", "node", "outcome", "ms", "error")


class StatusApp(App[None]):
    """Renders one snapshot per refresh; ``q`` quits."""

    TITLE = "lamamesh status"
    CSS = """
    #summary { height: auto; padding: 0 1; }
    #error { height: auto; padding: 0 1; color: $error; }
    #nodes { height: auto; max-height: 60%; }
    .heading { padding: 1 1 0 1; text-style: bold; }
    #recent { height: 1fr; }
    """
    BINDINGS: ClassVar = [("q", "quit", "Quit")]

    def __init__(self, fetch: Callable[[], Awaitable[Snapshot]], refresh: float = const.STATUS_REFRESH) -> None:
        super().__init__()
        self.fetch = fetch
        self.refresh_s = refresh
        self.snapshot: Snapshot | None = None
        self.error = ""
        self.frames = 0  # snapshots rendered

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("looking for the mesh...", id="summary")
        yield Static("", id="error")
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        yield Static("Recent tasks", classes="heading")
        yield DataTable(id="recent", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#nodes", DataTable).add_columns(*NODE_COLUMNS)
        self.query_one("#recent", DataTable).add_columns(*RECENT_COLUMNS)
        self.run_worker(self._poll(), exclusive=True, name="poll")

    async def _poll(self) -> None:
        while True:
            started = time.monotonic()
            try:
                snap = await self.fetch()
            except (MeshError, TimeoutError) as exc:
                self.error = f"lost the mesh ({exc or 'no answer'}); still trying"
                self.query_one("#error", Static).update(self.error)
            else:
                self.show(snap)
            await asyncio.sleep(max(0.0, self.refresh_s - (time.monotonic() - started)))

    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.error = ""
        self.frames += 1
        self.query_one("#summary", Static).update(summary(snap))
        self.query_one("#error", Static).update("")
        nodes = self.query_one("#nodes", DataTable)
        nodes.clear()
        for n in snap.nodes:
            nodes.add_row(*node_cells(n), key=n.id)
        recent = self.query_one("#recent", DataTable)
        recent.clear()
        for o in reversed(snap.recent):
            outcome = "[green]ok[/]" if o.outcome == "ok" else f"[red]{o.outcome}[/]"
            recent.add_row(
                time.strftime("%H:%M:%S", time.localtime(o.at)), o.task[:8], o.node, outcome, f"{o.ms:.0f}", o.error
            )
        self.sub_title = f"{snap.totals.nodes} nodes, via {snap.answered_by or '?'}"
