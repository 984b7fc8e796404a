"""The leader's book of tickets as plain data: whose ticket, used once, given back, remembered."""

from __future__ import annotations

from mesh.cluster.tickets import Tickets


def test_a_ticket_is_its_clients_for_its_kind_and_used_once() -> None:
    book = Tickets()
    t = book.issue(b"c", b"w1", "builtin", "")
    assert book.holds(b"c") and len(t) == 16
    assert book.take(t, b"other", "builtin", "") is None  # another client's
    assert book.take(t, b"c", "lama", "") is None  # another model
    assert book.take(t, b"c", "builtin", "gpu-high") is None  # another requirement
    got = book.take(t, b"c", "builtin", "")
    assert got is not None and got.worker == b"w1"
    assert book.take(t, b"c", "builtin", "") is None and not book.holds(b"c")  # used up


def test_a_lapsed_ticket_goes_only_for_a_task_of_its_kind() -> None:
    book = Tickets()
    t = book.issue(b"c", b"w1", "builtin", "")
    book.lapsed(b"c", "lama", "")  # another kind, sent plainly: the ticket still stands
    assert book.holds(b"c")
    book.lapsed(b"c", "builtin", "")
    assert not book.holds(b"c") and t not in book.held


def test_over_speaks_for_the_tickets_worker_and_remembers_a_task_done_early() -> None:
    book = Tickets(spent_kept=2)
    t1, t2, t3 = (book.issue(c, b"w1", "builtin", "") for c in (b"a", b"b", b"c"))
    assert not book.over(t1, b"w2", "x")  # not w2's ticket: nothing happens
    assert book.holds(b"a")
    assert not book.over(t1, b"w1", "")  # its hold given back unused
    assert not book.holds(b"a") and t1 not in book.spent
    assert book.over(t2, b"w1", "task-b") and book.over(t3, b"w1", "task-c")
    assert list(book.spent) == [t2, t3]
    t4 = book.issue(b"d", b"w1", "builtin", "")
    assert book.over(t4, b"w1", "task-d")
    assert list(book.spent) == [t3, t4]  # at most spent_kept remembered


def test_a_clients_or_a_workers_tickets_go_with_them() -> None:
    book = Tickets()
    book.issue(b"a", b"w1", "builtin", "")
    book.issue(b"b", b"w2", "builtin", "")
    book.issue(b"c", b"w1", "builtin", "")
    book.drop_worker(b"w1")
    assert sorted(book.of) == [b"b"]
    book.drop_client(b"b")
    assert not book.held and not book.of
