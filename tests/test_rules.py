"""The pure rules, without trio: link decisions, budgets and a lagging link's cursor.

:mod:`chat.lifecycle` decides what happens to links and :mod:`chat.flow`
keeps budgets and cursors; both take values (and time as a number) and
answer values, so every case is a table here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chat.flow import Cursor, FloodControl, TokenBucket
from chat.keys import SigningKey
from chat.lifecycle import (
    Closing,
    Departure,
    Reason,
    Verdict,
    client_departure,
    judge_hello,
    node_departure,
)
from chat.protocol import Event, ProtocolError, make_event
from chat.state import History

SMALL, LARGE = "1" * 32, "9" * 32

# --------------------------------------------------------------------------
# Which link to keep (§3)


def test_hello_with_our_own_id_is_the_node_itself() -> None:
    assert judge_hello(SMALL, SMALL, outgoing=True, existing_outgoing=None) is Verdict.ITSELF


@pytest.mark.parametrize("outgoing", [True, False])
def test_first_link_to_a_node_is_accepted(outgoing: bool) -> None:
    assert judge_hello(SMALL, LARGE, outgoing, existing_outgoing=None) is Verdict.ACCEPT


@pytest.mark.parametrize(
    ("own", "remote", "new_outgoing", "old_outgoing", "verdict"),
    [
        # The link dialled by the smaller id is kept, on both ends alike.
        (SMALL, LARGE, True, False, Verdict.REPLACE_OLD),  # we (smaller) dialled the new one
        (SMALL, LARGE, False, True, Verdict.KEEP_OLD),  # we dialled the old one
        (LARGE, SMALL, False, True, Verdict.REPLACE_OLD),  # the smaller remote dialled the new
        (LARGE, SMALL, True, False, Verdict.KEEP_OLD),
        # Both dialled by the same node: the older is kept.
        (SMALL, LARGE, True, True, Verdict.KEEP_OLD),
        (SMALL, LARGE, False, False, Verdict.KEEP_OLD),
    ],
)
def test_simultaneous_dials_keep_the_smaller_ids_link(
    own: str, remote: str, new_outgoing: bool, old_outgoing: bool, verdict: Verdict
) -> None:
    assert judge_hello(own, remote, new_outgoing, old_outgoing) is verdict


def test_both_ends_agree_on_the_link_to_keep() -> None:
    # A dialled B (connection 1) and B dialled A (connection 2); each end sees
    # the other connection second in one of the two orders.
    for a_first in (True, False):
        a_outgoing_new = not a_first  # A's view: the new link is conn 2 if conn 1 came first
        a = judge_hello(SMALL, LARGE, a_outgoing_new, existing_outgoing=a_first)
        b = judge_hello(LARGE, SMALL, not a_outgoing_new, existing_outgoing=not a_first)
        kept_by_a = "new" if a is Verdict.REPLACE_OLD else "old"
        kept_by_b = "new" if b is Verdict.REPLACE_OLD else "old"
        assert kept_by_a == kept_by_b


# --------------------------------------------------------------------------
# Whether a close is a departure (§4, §9)


def closing(reason: Reason) -> Closing:
    return Closing(reason)


NODE_CASES = [
    (Reason.RESET, True, False, False, True, Departure.LOST),
    (Reason.DEAD, True, False, False, True, Departure.LOST),
    (Reason.CLOSED_BY_REMOTE, True, False, False, True, Departure.LOST),
    (Reason.CLOSED_BY_REMOTE, True, True, False, True, Departure.NONE),  # said leave
    (Reason.RESET, True, False, True, True, Departure.NONE),  # we are leaving
    (Reason.RESET, True, False, False, False, Departure.NONE),  # already gone
    (Reason.RESET, False, False, False, True, Departure.NONE),  # never the active link
    (Reason.DUPLICATE, True, False, False, True, Departure.NONE),
    (Reason.ITSELF, True, False, False, True, Departure.NONE),
]


@pytest.mark.parametrize("case", NODE_CASES)
def test_node_departure(case: tuple[Reason, bool, bool, bool, bool, Departure]) -> None:
    reason, active, said_leave, stopping, present, expected = case
    got = node_departure(
        closing(reason), active=active, said_leave=said_leave, stopping=stopping, present=present
    )
    assert got is expected


@pytest.mark.parametrize(
    ("reason", "said_leave", "stopping", "expected"),
    [
        (Reason.CLOSED_BY_REMOTE, False, False, Departure.LEAVE),  # closing its side (§9)
        (Reason.RESET, False, False, Departure.LEAVE),  # closed with lines unread: RST
        (Reason.DEAD, False, False, Departure.LOST),
        (Reason.PROTOCOL_ERROR, False, False, Departure.LOST),
        (Reason.STALLED, False, False, Departure.LOST),
        (Reason.LEFT, True, False, Departure.NONE),  # /exit made its leave already
        (Reason.SHUTTING_DOWN, False, True, Departure.NONE),
    ],
)
def test_client_departure(
    reason: Reason, said_leave: bool, stopping: bool, expected: Departure
) -> None:
    assert client_departure(closing(reason), said_leave=said_leave, stopping=stopping) is expected


def test_closing_reads_as_its_detail() -> None:
    assert str(Closing(Reason.STALLED, "stopped reading for 10 s")) == "stopped reading for 10 s"
    assert str(Closing(Reason.CLOSED_BY_REMOTE)) == "closed by remote"


# --------------------------------------------------------------------------
# Budgets


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)  # one token short: 1/rate
    assert bucket.take(1.0) == 0.0  # refilled (capped at the burst)


def test_rate_zero_is_no_limit() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take(0.0) == 0.0 for _ in range(10_000))


def test_flood_control_cuts_off_after_patience_over_the_limit() -> None:
    flood = FloodControl(own_rate=1, own_burst=1, link_rate=1000, patience=10)
    assert flood.admit(True, 0.0) == 0.0
    assert flood.admit(False, 0.0) == 0.0  # the link budget is apart
    # Sending twice as fast as the rate: every frame has to wait...
    now = 0.0
    while now < 9.5:
        assert flood.admit(True, now) > 0
        now += 0.5
    # ...and after `patience` seconds of that, the connection is cut off.
    with pytest.raises(ProtocolError) as info:
        flood.admit(True, 10.0)
    assert info.value.code == "rate_limited"


# --------------------------------------------------------------------------
# A lagging link's cursor into the history


def collect(into: list[bytes]) -> Callable[[bytes], bool]:
    """An outbox that takes everything, into ``into``."""

    def put(raw: bytes) -> bool:
        into.append(raw)
        return True

    return put


_KEYS: dict[str, SigningKey] = {}


def origin_key(label: str) -> SigningKey:
    """A run key per label ("a", "b", ...), the same each time."""
    return _KEYS.setdefault(label, SigningKey.from_seed(label[:1].encode() * 32))


def ev(origin: str, seq: int, text: str = "") -> Event:
    """An event of the origin labelled ``origin``."""
    key = origin_key(origin)
    return make_event("msg", key, seq, 1.0, "n", text=text or f"{origin[:1]}{seq}")


def test_cursor_refills_in_order_skipping_the_links_own_and_what_it_has() -> None:
    history = History(100)
    mine, other, remote = "a", "b", "c"
    history.add(ev(other, 1))  # 0
    history.add(ev(mine, 1), source=7)  # 1: came from the link itself
    history.add(ev(remote, 1))  # 2: the remote's own
    history.add(ev(other, 2))  # 3
    history.add(ev(other, 3))  # 4
    have = {origin_key(other).node_id: 2}
    cursor = Cursor(0, serial=7, node=origin_key(remote).node_id, have=have)
    taken: list[bytes] = []
    assert cursor.refill(history, collect(taken))
    assert taken == [ev(other, 3).raw]
    assert cursor.next == history.end


def test_cursor_stops_when_the_outbox_is_full_and_resumes_there() -> None:
    history = History(100)
    origin = "a" * 32
    for seq in range(1, 6):
        history.add(ev(origin, seq))
    cursor = Cursor(0, serial=1, node="")
    taken: list[bytes] = []

    def put(raw: bytes) -> bool:
        if len(taken) == 2:
            return False
        taken.append(raw)
        return True

    assert not cursor.refill(history, put)
    assert taken == [ev(origin, 1).raw, ev(origin, 2).raw]
    taken.clear()
    assert cursor.refill(history, collect(taken))
    assert taken == [ev(origin, seq).raw for seq in (3, 4, 5)]


def test_cursor_skips_what_left_the_history_and_the_rest_is_bounded() -> None:
    history = History(3)
    origin = "a" * 32
    cursor = Cursor(0, serial=1, node="")
    for seq in range(1, 7):
        history.add(ev(origin, seq))  # 1..3 leave
    assert cursor.rest(history, budget=10**6) == b"".join(ev(origin, s).raw for s in (4, 5, 6))
    last = ev(origin, 6).raw
    assert cursor.rest(history, budget=len(last)) == last  # the most recent part


def test_history_is_bounded_in_events_and_in_bytes() -> None:
    origin = "a" * 32
    big = ev(origin, 1, "x" * 1000)
    history = History(10, max_bytes=3 * len(big.raw))
    for seq in range(1, 8):
        history.add(ev(origin, seq, "x" * 1000))
    assert len(history) == 3
    assert history.bytes <= history.max_bytes
    assert [e.seq for e in history] == [5, 6, 7]
    assert history.add(ev(origin, 9, "x" * 4000)) is None  # larger than the whole cap
    small = History(2, max_bytes=10**6)
    for seq in range(1, 5):
        small.add(ev(origin, seq))
    assert [e.seq for e in small] == [3, 4]


def test_recent_start_gives_a_newcomer_the_most_recent_part() -> None:
    origin = "a" * 32
    history = History(100)
    for seq in range(1, 11):
        history.add(ev(origin, seq, "x" * 100))
    size = len(ev(origin, 10, "x" * 100).raw)
    start = history.recent_start(3 * size, lambda event, source: True)
    assert start == history.end - 3
    assert history.recent_start(10**6, lambda event, source: True) == history.first
