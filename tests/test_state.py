"""Tests of the pure state (PROTOCOL.md §4-§6): order, history, membership.

Time is a number passed in, so hold-back is tested without trio.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.keys import fingerprint
from chat.members import Entry, Membership, tag
from chat.protocol import MAX_HAVE, Event, EventKind
from chat.state import HOLD_BACK, Delivery, Gap, History, Sequencer

A = "a" * 32
B = "b" * 32
C = "c" * 32
D = "d" * 32
TS = 1763700000.0


def ev(
    origin: str,
    seq: int,
    kind: EventKind = "msg",
    *,
    name: str = "",
    ts: float | None = None,
    text: str = "",
    node: str = "",
) -> Event:
    """An event of ``origin``; msg text and names default to something telling.

    Built as a value (its ``raw`` the JSON of its members): the state under
    test orders and shows events; whose signature holds is the router's
    business. Its run key is a stand-in, so fingerprints differ per origin.
    """
    if kind == "msg" and not text:
        text = f"message {seq}"
    when = TS + seq if ts is None else ts
    name = name or f"user-{origin[:2]}"
    raw = json.dumps({"type": kind, "origin": origin, "seq": seq, "text": text}).encode()
    return Event(kind, origin, seq, when, name, text, node, pub=origin.encode(), raw=raw + b"\n")


def node_id(i: int) -> str:
    return f"{i:032x}"


# --------------------------------------------------------------------------
# Sequencer: de-duplication and per-origin order (§5)


def test_first_event_is_delivered() -> None:
    seq = Sequencer()
    e1 = ev(A, 1)
    assert seq.accept(e1, 0.0) == [e1]
    assert seq.have(A) == 1
    assert len(seq) == 1


def test_duplicate_is_dropped() -> None:
    seq = Sequencer()
    e1 = ev(A, 1)
    assert seq.accept(e1, 0.0) == [e1]
    assert seq.accept(e1, 0.0) is None
    # Identity is (origin, seq), not content.
    assert seq.accept(ev(A, 1, text="different"), 1.0) is None
    assert not seq.is_new(A, 1)
    assert seq.is_new(A, 2)
    assert seq.is_new(B, 1)


def test_in_order_events_are_delivered_one_by_one() -> None:
    seq = Sequencer()
    for n in range(1, 6):
        e = ev(A, n)
        assert seq.accept(e, float(n)) == [e]
    assert seq.have(A) == 5
    assert seq.next_deadline() is None


def test_out_of_order_is_held_then_delivered_in_order() -> None:
    seq = Sequencer()
    e1, e2, e3 = ev(A, 1), ev(A, 2), ev(A, 3)
    assert seq.accept(e1, 0.0) == [e1]
    assert seq.accept(e3, 0.0) == []
    assert seq.have(A) == 1
    assert not seq.is_new(A, 3)  # held counts as seen
    assert seq.is_new(A, 2)
    assert seq.accept(e3, 0.5) is None  # a held event again is a duplicate
    assert seq.accept(e2, 1.0) == [e2, e3]
    assert seq.have(A) == 3
    assert seq.next_deadline() is None


def test_reverse_arrival_is_delivered_in_seq_order() -> None:
    seq = Sequencer()
    first = ev(A, 1)
    assert seq.accept(first, 0.0) == [first]
    later = [ev(A, n) for n in range(2, 8)]
    for e in reversed(later[1:]):
        assert seq.accept(e, 0.0) == []
    assert seq.accept(later[0], 0.0) == later
    assert seq.have(A) == 7


def test_a_gap_in_one_origin_does_not_hold_another() -> None:
    seq = Sequencer()
    a1, a3, b1, b2 = ev(A, 1), ev(A, 3), ev(B, 1), ev(B, 2)
    assert seq.accept(a1, 0.0) == [a1]
    assert seq.accept(a3, 0.0) == []
    assert seq.accept(b1, 0.0) == [b1]
    assert seq.accept(b2, 0.0) == [b2]
    assert seq.have(A) == 1
    assert seq.have(B) == 2


def test_first_event_heard_sets_where_the_origin_starts() -> None:
    seq = Sequencer()
    e7 = ev(A, 7)
    assert seq.accept(e7, 0.0) == [e7]  # not held for 1..6, no gap reported
    assert seq.have(A) == 7
    assert seq.next_deadline() is None
    # Earlier seqs only arrive as duplicates.
    for n in range(1, 8):
        assert not seq.is_new(A, n)
        assert seq.accept(ev(A, n), 1.0) is None
    e8 = ev(A, 8)
    assert seq.accept(e8, 2.0) == [e8]
    assert seq.expire(100.0) == []


def test_holdback_applies_after_the_start() -> None:
    seq = Sequencer()
    e5, e7 = ev(A, 5), ev(A, 7)
    assert seq.accept(e5, 0.0) == [e5]
    assert seq.accept(e7, 0.0) == []
    assert seq.expire(HOLD_BACK) == [Gap(A, e7.name, 1, e7.ts), e7]


# --------------------------------------------------------------------------
# Sequencer: hold-back and expiry (§5)


def test_gap_is_given_up_after_hold_back() -> None:
    seq = Sequencer()
    e1, e3, e4 = ev(A, 1), ev(A, 3, name="alice"), ev(A, 4)
    seq.accept(e1, 0.0)
    assert seq.accept(e3, 10.0) == []
    assert seq.accept(e4, 12.0) == []
    assert seq.next_deadline() == 10.0 + HOLD_BACK
    assert seq.expire(10.0 + HOLD_BACK - 0.01) == []
    assert seq.expire(10.0 + HOLD_BACK) == [Gap(A, "alice", 1, e3.ts), e3, e4]
    assert seq.have(A) == 4
    assert seq.next_deadline() is None
    # Reported once.
    assert seq.expire(1000.0) == []
    # The missing one, arriving late, is a duplicate now.
    assert seq.accept(ev(A, 2), 20.0) is None
    e5 = ev(A, 5)
    assert seq.accept(e5, 21.0) == [e5]


def test_each_gap_is_reported_just_before_the_events_it_held() -> None:
    seq = Sequencer()
    seq.accept(ev(A, 1), 0.0)
    e3, e6, e7 = ev(A, 3, name="n3"), ev(A, 6, name="n6"), ev(A, 7)
    assert seq.accept(e6, 0.0) == []
    assert seq.accept(e3, 1.0) == []
    assert seq.accept(e7, 2.0) == []
    assert seq.expire(HOLD_BACK) == [
        Gap(A, "n3", 1, e3.ts),
        e3,
        Gap(A, "n6", 2, e6.ts),
        e6,
        e7,
    ]


def test_filling_the_gap_cancels_the_deadline() -> None:
    seq = Sequencer()
    e1, e2, e3 = ev(A, 1), ev(A, 2), ev(A, 3)
    seq.accept(e1, 0.0)
    seq.accept(e3, 1.0)
    assert seq.next_deadline() == 1.0 + HOLD_BACK
    assert seq.accept(e2, 2.0) == [e2, e3]
    assert seq.next_deadline() is None
    assert seq.expire(100.0) == []


def test_partly_filled_gap_keeps_holding_the_rest() -> None:
    seq = Sequencer()
    e1, e2, e3, e5 = ev(A, 1), ev(A, 2), ev(A, 3), ev(A, 5)
    seq.accept(e1, 0.0)
    seq.accept(e3, 0.0)
    seq.accept(e5, 0.0)
    assert seq.accept(e2, 1.0) == [e2, e3]
    assert seq.have(A) == 3
    assert seq.is_new(A, 4)
    assert not seq.is_new(A, 5)
    assert seq.next_deadline() is not None
    assert seq.expire(100.0) == [Gap(A, e5.name, 1, e5.ts), e5]


def test_a_gap_left_after_a_partial_fill_gets_its_full_hold_back() -> None:
    # §5: a gap is given up once it has been open for 5 s. Seq 4 is known to
    # be missing only from t=4 (when 5 arrives); the older gap (seq 2)
    # closing at t=4.5 must not leave seq 4 a mere half second.
    seq = Sequencer()
    e1, e2, e3, e4, e5 = (ev(A, n) for n in range(1, 6))
    seq.accept(e1, 0.0)
    assert seq.accept(e3, 0.0) == []
    assert seq.accept(e5, 4.0) == []
    assert seq.accept(e2, 4.5) == [e2, e3]
    deadline = seq.next_deadline()
    assert deadline is not None
    assert deadline >= 4.0 + HOLD_BACK
    assert seq.expire(4.0 + HOLD_BACK - 0.1) == []
    assert seq.accept(e4, 4.0 + HOLD_BACK - 0.1) == [e4, e5]


def test_a_new_gap_after_an_expired_one_gets_its_own_deadline() -> None:
    seq = Sequencer()
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(A, 3), 0.0)
    assert len(seq.expire(HOLD_BACK)) == 2
    assert seq.accept(ev(A, 5), 50.0) == []
    assert seq.next_deadline() == 50.0 + HOLD_BACK


def test_deadlines_of_several_origins() -> None:
    seq = Sequencer()
    a1, a3, b1, b3 = ev(A, 1), ev(A, 3), ev(B, 1), ev(B, 3)
    for e in (a1, b1):
        seq.accept(e, 0.0)
    seq.accept(a3, 0.0)
    seq.accept(b3, 2.0)
    assert seq.next_deadline() == HOLD_BACK
    assert seq.expire(HOLD_BACK) == [Gap(A, a3.name, 1, a3.ts), a3]
    assert seq.next_deadline() == 2.0 + HOLD_BACK
    assert seq.expire(2.0 + HOLD_BACK) == [Gap(B, b3.name, 1, b3.ts), b3]
    assert seq.next_deadline() is None


def test_custom_hold_back() -> None:
    seq = Sequencer(hold_back=1.5)
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(A, 4), 3.0)
    assert seq.next_deadline() == 4.5
    assert seq.expire(4.4) == []
    out = seq.expire(4.5)
    assert out[0] == Gap(A, ev(A, 4).name, 2, ev(A, 4).ts)


def test_max_held_gives_the_gap_up_at_once() -> None:
    seq = Sequencer(max_held=3)
    seq.accept(ev(A, 1), 0.0)
    held = [ev(A, n) for n in (3, 4, 5)]
    for e in held:
        assert seq.accept(e, 0.0) == []
    e6 = ev(A, 6)
    assert seq.accept(e6, 0.0) == [Gap(A, held[0].name, 1, held[0].ts), *held, e6]
    assert seq.have(A) == 6
    assert seq.next_deadline() is None
    assert seq.expire(100.0) == []


def test_max_held_with_several_gaps() -> None:
    seq = Sequencer(max_held=2)
    seq.accept(ev(A, 1), 0.0)
    e3, e5, e7 = ev(A, 3), ev(A, 5), ev(A, 7)
    assert seq.accept(e3, 0.0) == []
    assert seq.accept(e5, 0.0) == []
    assert seq.accept(e7, 0.0) == [
        Gap(A, e3.name, 1, e3.ts),
        e3,
        Gap(A, e5.name, 1, e5.ts),
        e5,
        Gap(A, e7.name, 1, e7.ts),
        e7,
    ]


# --------------------------------------------------------------------------
# Sequencer: memory bounds and have (§3)


def test_max_origins_forgets_the_least_recently_heard() -> None:
    seq = Sequencer(max_origins=2)
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(B, 1), 0.0)
    seq.accept(ev(A, 2), 0.0)  # A heard again: B is now the oldest
    seq.accept(ev(C, 1), 0.0)
    assert len(seq) == 2
    assert seq.have(B) == 0
    assert seq.is_new(B, 1)
    assert seq.have(A) == 2
    assert seq.have(C) == 1


def test_a_forgotten_origin_starts_afresh() -> None:
    seq = Sequencer(max_origins=1)
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(B, 1), 0.0)
    e5 = ev(A, 5)
    assert seq.accept(e5, 0.0) == [e5]
    assert seq.have(A) == 5


def test_forgetting_a_gapped_origin_drops_its_deadline() -> None:
    seq = Sequencer(max_origins=2)
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(A, 3), 0.0)
    assert seq.next_deadline() == HOLD_BACK
    seq.accept(ev(B, 1), 1.0)
    seq.accept(ev(C, 1), 1.0)
    assert seq.next_deadline() is None
    assert seq.expire(100.0) == []


def test_duplicates_count_as_hearing_from_an_origin() -> None:
    seq = Sequencer(max_origins=2)
    seq.accept(ev(A, 1), 0.0)
    seq.accept(ev(B, 1), 0.0)
    assert seq.accept(ev(A, 1), 0.0) is None
    seq.accept(ev(C, 1), 0.0)
    assert seq.have(A) == 1
    assert seq.have(B) == 0


def test_have_map_lists_the_gapless_seq() -> None:
    seq = Sequencer()
    assert seq.have_map() == {}
    for n in (1, 2, 4):
        seq.accept(ev(A, n), 0.0)
    seq.accept(ev(B, 9), 0.0)
    assert seq.have_map() == {A: 2, B: 9}


def test_have_map_limit_keeps_the_most_recent() -> None:
    seq = Sequencer()
    for origin in (A, B, C):
        seq.accept(ev(origin, 1), 0.0)
    assert seq.have_map(limit=2) == {B: 1, C: 1}
    seq.accept(ev(A, 2), 1.0)
    assert seq.have_map(limit=2) == {C: 1, A: 2}
    assert seq.have_map(limit=0) == {}


def test_have_map_default_limit_is_max_have() -> None:
    seq = Sequencer()
    origins = [node_id(i) for i in range(MAX_HAVE + 5)]
    for origin in origins:
        seq.accept(ev(origin, 1), 0.0)
    have = seq.have_map()
    assert len(have) == MAX_HAVE
    assert set(have) == set(origins[5:])


def test_record_own() -> None:
    seq = Sequencer()
    seq.record_own(A, 1)
    assert seq.have(A) == 1
    assert not seq.is_new(A, 1)
    seq.record_own(A, 2)
    assert seq.have(A) == 2
    assert seq.accept(ev(A, 2), 0.0) is None
    assert seq.have_map() == {A: 2}


def test_record_own_counts_as_recent() -> None:
    # A node's own origin (and its plain-text clients') must not fall out of
    # have (§3) or out of memory just because it was created first.
    seq = Sequencer(max_origins=3)
    seq.record_own(A, 1)
    seq.accept(ev(B, 1), 0.0)
    seq.accept(ev(C, 1), 0.0)
    seq.record_own(A, 2)
    assert seq.have_map(limit=1) == {A: 2}
    seq.accept(ev(D, 1), 0.0)  # forgets the least recently heard: B
    assert seq.have(A) == 2
    assert seq.have(B) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.permutations(list(range(1, 13))),
    st.sets(st.integers(2, 12), max_size=6),
    st.integers(1, 12),
)
def test_any_arrival_order_delivers_each_seq_once_in_order(
    order: list[int], dropped: set[int], first: int
) -> None:
    """Whatever the order and loss, output is increasing, unique, and gaps add up."""
    seq = Sequencer()
    out: list[Delivery] = []
    arrivals = [first] + [n for n in order if n != first and n not in dropped]
    for now, n in enumerate(arrivals):
        got = seq.accept(ev(A, n), float(now))
        if n < first:
            assert got is None  # before where the origin starts: a duplicate
            continue
        assert got is not None
        out.extend(got)
        assert seq.accept(ev(A, n), float(now)) is None
    out.extend(seq.expire(1e9))
    assert seq.next_deadline() is None
    delivered = [d.seq for d in out if isinstance(d, Event)]
    assert delivered == sorted(set(delivered))
    assert delivered[0] == first
    assert set(delivered) == {n for n in arrivals if n >= first}
    missed = sum(d.missed for d in out if isinstance(d, Gap))
    assert missed == delivered[-1] - first + 1 - len(delivered)
    # A gap comes just before the event after it.
    for i, d in enumerate(out):
        if isinstance(d, Gap):
            after = out[i + 1]
            assert isinstance(after, Event)
            assert d.ts == after.ts
            assert d.name == after.name


# --------------------------------------------------------------------------
# History (§6)


def test_history_keeps_the_most_recent() -> None:
    history = History(3)
    events = [ev(A, n) for n in range(1, 6)]
    for e in events:
        history.add(e)
    assert len(history) == 3
    assert list(history) == events[2:]
    assert history.get((A, 1)) is None
    assert history.get((A, 2)) is None
    assert history.get((A, 3)) is events[2]
    assert history.get((A, 5)) is events[4]
    assert history.get((B, 5)) is None


def test_history_of_size_zero_keeps_nothing() -> None:
    history = History(0)
    history.add(ev(A, 1))
    assert len(history) == 0
    assert list(history) == []
    assert history.get((A, 1)) is None


def test_missing_for_is_what_have_lacks_oldest_first() -> None:
    history = History(100)
    events = [ev(A, 1), ev(B, 1), ev(A, 2), ev(C, 4), ev(B, 2), ev(A, 3)]
    for e in events:
        history.add(e)
    assert list(history.missing_for({})) == events
    assert list(history.missing_for({A: 2, B: 1})) == [events[3], events[4], events[5]]
    assert list(history.missing_for({A: 3, B: 2, C: 4})) == []
    assert list(history.missing_for({A: 99, B: 99, C: 99})) == []


def test_missing_for_skips_the_receivers_own_origin() -> None:
    history = History(100)
    events = [ev(A, 1), ev(B, 1), ev(A, 2), ev(B, 2)]
    for e in events:
        history.add(e)
    # §5: a node's own events are never sent back, even if its have omits them.
    assert list(history.missing_for({}, skip_origin=B)) == [events[0], events[2]]
    assert list(history.missing_for({A: 1}, skip_origin=B)) == [events[2]]


def test_missing_for_offers_only_what_is_still_held() -> None:
    history = History(2)
    for n in range(1, 5):
        history.add(ev(A, n))
    assert [e.seq for e in history.missing_for({A: 1})] == [3, 4]


# --------------------------------------------------------------------------
# Membership (§2, §4)


def join(members: Membership, origin: str, name: str, ts: float = TS) -> Entry | None:
    return members.apply(ev(origin, 1, "join", name=name, ts=ts), False)


def test_join_and_msg_lines() -> None:
    members = Membership()
    j = ev(A, 1, "join", name="alice")
    entry = members.apply(j, False)
    assert entry == Entry("join", j.ts, "alice", event=j, origin=A)
    m = ev(A, 2, name="alice", text="hi all")
    entry = members.apply(m, True)
    assert entry == Entry("msg", m.ts, "alice", "hi all", history=True, event=m, origin=A)
    member = members.get(A)
    assert member is not None
    assert member.present
    assert [x.node for x in members.present()] == [A]


def test_leave_then_lost_is_shown_once() -> None:
    members = Membership()
    join(members, A, "alice")
    join(members, B, "bob")
    leave = ev(A, 2, "leave", name="alice")
    assert members.apply(leave, False) == Entry("leave", leave.ts, "alice", event=leave, origin=A)
    assert members.apply(ev(B, 2, "lost", name="bob", node=A), False) is None
    assert [m.node for m in members.present()] == [B]


def test_lost_reported_twice_is_shown_once() -> None:
    members = Membership()
    join(members, A, "alice")
    join(members, B, "bob")
    join(members, C, "carol")
    lost = ev(B, 2, "lost", name="bob", node=A)
    entry = members.apply(lost, False)
    # The line is about the vanished node, reported by B.
    assert entry == Entry("lost", lost.ts, "alice", event=lost, origin=B)
    assert members.apply(ev(C, 2, "lost", name="carol", node=A), False) is None
    assert members.apply(ev(B, 3, "lost", name="bob", node=A), False) is None
    member = members.get(A)
    assert member is not None
    assert not member.present


def test_lost_then_leave_is_shown_once() -> None:
    members = Membership()
    join(members, A, "alice")
    assert members.apply(ev(B, 1, "lost", name="bob", node=A), False) is not None
    assert members.apply(ev(A, 2, "leave", name="alice"), False) is None
    member = members.get(A)
    assert member is not None
    assert not member.present


def test_lost_of_an_unknown_node_is_not_shown() -> None:
    members = Membership()
    assert members.apply(ev(B, 1, "lost", name="hub", node=C), False) is None
    assert members.get(C) is None
    # The reporter is heard of, under the name it reported with.
    reporter = members.get(B)
    assert reporter is not None
    assert reporter.name == "hub"
    assert reporter.present


def test_a_departed_node_heard_from_again_is_present() -> None:
    members = Membership()
    join(members, A, "alice")
    assert members.apply(ev(B, 1, "lost", name="bob", node=A), False) is not None
    back = ev(A, 5, name="alice", text="I'm back")
    assert members.apply(back, False) == Entry(
        "msg", back.ts, "alice", "I'm back", event=back, origin=A
    )
    member = members.get(A)
    assert member is not None
    assert member.present
    # ... so its next departure is shown again.
    again = ev(C, 1, "lost", name="carol", node=A)
    assert members.apply(again, False) == Entry("lost", again.ts, "alice", event=again, origin=C)


def test_a_node_that_left_and_joins_again_is_shown_both_times() -> None:
    members = Membership()
    join(members, A, "alice")
    assert members.apply(ev(A, 2, "leave", name="alice"), False) is not None
    j = ev(A, 3, "join", name="alice")
    assert members.apply(j, False) == Entry("join", j.ts, "alice", event=j, origin=A)
    assert members.apply(ev(A, 4, "leave", name="alice"), False) is not None


def test_leave_of_a_node_never_seen_is_shown() -> None:
    # Its join may have left every history: the leave still says who went.
    members = Membership()
    leave = ev(A, 9, "leave", name="alice")
    assert members.apply(leave, False) == Entry("leave", leave.ts, "alice", event=leave, origin=A)
    assert members.present() == []


def test_nick_line() -> None:
    members = Membership()
    join(members, A, "alice")
    nick = ev(A, 2, "nick", name="alice2")
    assert members.apply(nick, False) == Entry(
        "nick", nick.ts, "alice", "alice2", event=nick, origin=A
    )
    member = members.get(A)
    assert member is not None
    assert member.name == "alice2"
    m = ev(A, 3, name="alice2", text="renamed")
    entry = members.apply(m, False)
    assert entry is not None
    assert entry.who == "alice2"


def test_nick_to_the_same_name_is_not_shown() -> None:
    members = Membership()
    join(members, A, "alice")
    assert members.apply(ev(A, 2, "nick", name="alice"), False) is None


def fp_tag(origin: str) -> str:
    return tag(fingerprint(origin.encode()))


def test_name_collision_shows_the_fingerprint() -> None:
    members = Membership()
    a, b = A, B
    assert join(members, a, "bob") is not None
    entry = join(members, b, "bob")
    assert entry is not None
    assert entry.who == f"bob~{fp_tag(b)}"
    assert members.display_name(a) == f"bob~{fp_tag(a)}"
    assert members.display_name(b) == f"bob~{fp_tag(b)}"
    msg = members.apply(ev(a, 2, name="bob", text="which bob?"), False)
    assert msg is not None
    assert msg.who == f"bob~{fp_tag(a)}"
    # The departure line still says which bob went.
    leave = members.apply(ev(b, 2, "leave", name="bob"), False)
    assert leave is not None
    assert leave.who == f"bob~{fp_tag(b)}"
    # With one bob present, no suffix.
    assert members.display_name(a) == "bob"
    msg = members.apply(ev(a, 3, name="bob", text="just me"), False)
    assert msg is not None
    assert msg.who == "bob"


def test_nick_into_and_out_of_a_collision() -> None:
    members = Membership()
    a, b = A, B
    join(members, a, "bob")
    join(members, b, "carol")
    into = members.apply(ev(b, 2, "nick", name="bob"), False)
    assert into is not None
    assert (into.who, into.text) == ("carol", "bob")
    assert members.display_name(a) == f"bob~{fp_tag(a)}"
    out = members.apply(ev(a, 2, "nick", name="dave"), False)
    assert out is not None
    assert (out.who, out.text) == (f"bob~{fp_tag(a)}", "dave")
    assert members.display_name(b) == "bob"


def test_display_name_of_an_unknown_node() -> None:
    assert Membership().display_name(A) == A[:8]


def test_gap_entry() -> None:
    members = Membership()
    join(members, A, "alice")
    entry = members.apply(Gap(A, "alice", 3, TS + 9), False)
    assert entry == Entry("gap", TS + 9, "alice", missed=3, origin=A)
    assert entry.event is None
    # Of an origin not heard of: the name the gap carries.
    entry = members.apply(Gap(B, "bob", 1, TS), True)
    assert entry == Entry("gap", TS, "bob", missed=1, history=True, origin=B)


def test_history_flag_is_passed_through() -> None:
    members = Membership()
    entry = members.apply(ev(A, 1, "join", name="alice"), True)
    assert entry is not None
    assert entry.history


def test_max_members_bound() -> None:
    members = Membership(max_members=2)
    join(members, A, "alice")
    join(members, B, "bob")
    join(members, C, "carol")
    assert members.get(A) is None
    assert members.get(B) is not None
    assert members.get(C) is not None
