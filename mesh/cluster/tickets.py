"""The leader's book of tickets: slots held ahead at a worker for a client's next task.

Plain data, no sockets and no clock: the scheduler decides when to offer one (nothing queued, a
worker with credit) and sends the messages; this keeps which ticket is whose, takes one back when
its task comes, and remembers the tickets whose task was done before its ``Submit`` reached the
leader (so that ``Submit`` is not placed again). See docs/architecture.md, "A task's path".
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from mesh import const


@dataclass(frozen=True)
class Ticket:
    """A slot held at ``worker`` for the next task ``client`` submits of this model and requirement."""

    client: bytes
    worker: bytes
    model: str
    requires: str


class Tickets:
    def __init__(self, spent_kept: int = const.TICKETS_SPENT_KEPT) -> None:
        self.held: dict[str, Ticket] = {}  # ticket -> its slot, until used, given back or its worker gone
        self.of: dict[bytes, str] = {}  # client -> its ticket (one at a time)
        self.spent: OrderedDict[str, None] = OrderedDict()  # done before their Submit came
        self.spent_kept = spent_kept

    def issue(self, client: bytes, worker: bytes, model: str, requires: str) -> str:
        ticket = secrets.token_hex(8)  # 64 random bits: a peer cannot guess another client's
        self.held[ticket] = Ticket(client, worker, model, requires)
        self.of[client] = ticket
        return ticket

    def holds(self, client: bytes) -> bool:
        return client in self.of

    def take(self, ticket: str, client: bytes, model: str, requires: str) -> Ticket | None:
        """The ticket a ``Submit`` names, if it is this client's and for this kind of task (then it is
        used up); None otherwise (not given, used, given back, its worker gone, another's)."""
        held = self.held.get(ticket)
        if held is None or held.client != client or (held.model, held.requires) != (model, requires):
            return None
        self.drop(ticket)
        return held

    def lapsed(self, client: bytes, model: str, requires: str) -> None:
        """The client sent a new task of its ticket's kind plainly: it let the ticket lapse. Forget it
        (the worker gives its slot back when its hold ends) so the client can be offered another."""
        held = self.held.get(self.of.get(client, ""))
        if held is not None and (held.model, held.requires) == (model, requires):
            self.drop(self.of[client])

    def over(self, ticket: str, worker: bytes, task_id: str) -> bool:
        """The worker's word that a ticket is over: its task done (``task_id``) or its hold given back.
        True when that task was done before its ``Submit`` came (the caller records the outcome; the
        ``Submit`` is then ignored). A worker speaks only for its own tickets."""
        held = self.held.get(ticket)
        if held is None or held.worker != worker:
            return False
        self.drop(ticket)
        if not task_id:
            return False
        self.spent[ticket] = None
        while len(self.spent) > self.spent_kept:
            self.spent.popitem(last=False)
        return True

    def drop(self, ticket: str) -> None:
        held = self.held.pop(ticket, None)
        if held is not None and self.of.get(held.client) == ticket:
            del self.of[held.client]

    def drop_client(self, client: bytes) -> None:
        if client in self.of:
            self.drop(self.of[client])

    def drop_worker(self, worker: bytes) -> None:
        for ticket in [k for k, t in self.held.items() if t.worker == worker]:
            self.drop(ticket)

    def clear(self) -> None:
        """A leader that stops leading, or starts: a new leader knows no tickets."""
        self.held.clear()
        self.of.clear()
