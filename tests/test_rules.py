"""The pure rules, without trio: link decisions, budgets and backlogs.

:mod:`chat.lifecycle` decides what happens to links and :mod:`chat.flow`
keeps budgets and backlogs; both take values (and time as a number) and
answer values, so every case is a table here.
"""

from __future__ import annotations

import pytest

from chat.flow import Backlog, FloodControl, TokenBucket
from chat.lifecycle import (
    Closing,
    Departure,
    Reason,
    Verdict,
    client_departure,
    judge_hello,
    node_departure,
)
from chat.protocol import ProtocolError

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
        (Reason.RESET, False, False, Departure.LOST),
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
# The backlog of a full outbox


def test_backlog_keeps_the_newest_keys_up_to_its_limit() -> None:
    backlog = Backlog(limit=3)
    for seq in range(1, 6):
        backlog.add(("a", seq))
    assert len(backlog) == 3
    held = {("a", seq): f"e{seq}".encode() for seq in range(1, 6)}
    assert list(backlog.drain(held.get)) == [b"e3", b"e4", b"e5"]
    assert len(backlog) == 0


def test_backlog_refill_stops_when_the_outbox_is_full_and_skips_what_history_lost() -> None:
    backlog = Backlog(limit=10)
    for seq in range(1, 6):
        backlog.add(("a", seq))
    history = {("a", seq): f"e{seq}".encode() for seq in (1, 2, 4, 5)}  # 3 left the history
    taken: list[bytes] = []

    def put(data: bytes) -> bool:
        if len(taken) == 2:
            return False
        taken.append(data)
        return True

    assert not backlog.refill(history.get, put)  # full after two
    assert taken == [b"e1", b"e2"]
    taken.clear()

    def take_all(data: bytes) -> bool:
        taken.append(data)
        return True

    assert backlog.refill(history.get, take_all)
    assert taken == [b"e4", b"e5"]  # 3 skipped, order kept
    assert len(backlog) == 0
