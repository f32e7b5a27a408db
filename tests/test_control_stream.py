"""Control messages as delta streams: exact reconstruction, gaps never patched over.

A receiver applies a delta only on the exact message it was computed against; a gap (a
lost message, a restarted sender) leaves the last good state in place, lists the sender
for resync, and the next full message repairs it. Bad bytes raise typed errors.
"""

from __future__ import annotations

import random

import pytest

from crdtsync._encoding import packb
from crdtsync.clock import Context, Dot
from crdtsync.control import Heartbeat, Membership
from crdtsync.control.heartbeat import HEARTBEAT_SECTIONS
from crdtsync.control.stream import Retained, StreamDecoder, StreamEncoder, peek
from crdtsync.errors import CorruptRecord, UnsupportedVersion

SCHEMA = {"hb": HEARTBEAT_SECTIONS}


def hb(ctx: Context, wall: int = 1_000, ping: int = 0, echo: dict[str, int] | None = None,
       pruned: frozenset[str] = frozenset()) -> Heartbeat:
    return Heartbeat("a~1", "a", "eu", "default", ctx, wall, wall * 65536, {"log": wall}, {}, ping,
                     echo or {}, pruned)


def grow(rng: random.Random, ctx: Context) -> Context:
    for _ in range(rng.randint(0, 4)):
        r = f"r{rng.randint(0, 30)}"
        seq = ctx.max_seq(r) + rng.randint(1, 3)  # sometimes leaves a gap: a cloud
        ctx = ctx.add(Dot(r, seq))
    if rng.random() < 0.1 and ctx.replicas():
        ctx = ctx.without([sorted(ctx.replicas())[0]])  # pruning shrinks a context
    return ctx


def test_every_delta_rebuilds_exactly_what_was_sent():
    rng = random.Random(3)
    enc = StreamEncoder("hb", "a", epoch=7, full_every=10)
    dec = StreamDecoder(SCHEMA)
    ctx = Context()
    sizes_full, sizes_delta = [], []
    for i in range(200):
        ctx = grow(rng, ctx)
        sent = hb(ctx, 1_000 + i, ping=i // 50, echo={"b": i // 7}, pruned=frozenset({"x~1"} if i > 100 else ()))
        data = enc.encode(sent.to_state())
        rec = dec.decode(data)
        assert rec.state is not None
        got = Heartbeat.from_state("a", rec.state)
        assert got == sent and got.context == ctx and got.echo == sent.echo and got.pruned == sent.pruned
        (sizes_full if rec.full else sizes_delta).append(len(data))
    assert enc.stats.fulls == 20 and enc.stats.deltas == 180  # one full every 10 messages
    assert dec.stats.gaps == 0 and not dec.resync["hb"]
    assert max(sizes_delta) < min(sizes_full[5:])  # deltas carry only what changed


def test_a_gap_keeps_the_last_good_state_until_the_next_full_one():
    enc = StreamEncoder("hb", "a", epoch=1, full_every=5)
    dec = StreamDecoder(SCHEMA)
    ctxs = [Context.from_vv({"a~1": i, "b": i // 2}) for i in range(1, 12)]
    msgs = [enc.encode(hb(c, 1000 + i).to_state()) for i, c in enumerate(ctxs)]
    assert dec.decode(msgs[0]).state is not None  # full
    assert dec.decode(msgs[1]).state is not None
    # msgs[2] is lost: msgs[3] and msgs[4] are deltas on bases not held
    for m in msgs[3:5]:
        rec = dec.decode(m)
        assert rec.state is None
    assert dec.stats.gaps == 2 and dec.resync["hb"] == {"a"}
    rec = dec.decode(msgs[5])  # the periodic full repairs it
    assert rec.full and rec.state is not None and rec.state["ctx"] == ctxs[5]
    assert not dec.resync["hb"]
    # a duplicate or late message is ignored, not applied on the newer state
    assert dec.decode(msgs[4]).state is None and dec.stats.stale == 1
    assert dec.decode(msgs[6]).state["ctx"] == ctxs[6]


def test_a_request_makes_the_next_message_full_and_is_readable_in_a_message_not_applied():
    enc = StreamEncoder("hb", "a", epoch=1, full_every=1000)
    dec = StreamDecoder(SCHEMA)
    first = dec.decode(enc.encode(hb(Context.from_vv({"a~1": 1})).to_state(), want={"z"}))
    assert first.full and first.want == {"z"}
    enc.encode(hb(Context.from_vv({"a~1": 2})).to_state())  # lost
    gapped = dec.decode(enc.encode(hb(Context.from_vv({"a~1": 3})).to_state(), want={"b", "c"}))
    assert gapped.state is None and gapped.want == {"b", "c"}  # the request is heard anyway
    assert dec.resync["hb"] == {"a"}
    enc.request_full()
    rec = dec.decode(enc.encode(hb(Context.from_vv({"a~1": 4})).to_state()))
    assert rec.full and rec.state["ctx"] == Context.from_vv({"a~1": 4})


def test_a_restarted_sender_starts_a_new_epoch_and_its_deltas_never_apply_on_the_old_one():
    dec = StreamDecoder(SCHEMA)
    old = StreamEncoder("hb", "a", epoch=1)
    dec.decode(old.encode(hb(Context.from_vv({"a~1": 5})).to_state()))
    dec.decode(old.encode(hb(Context.from_vv({"a~1": 6})).to_state()))
    new = StreamEncoder("hb", "a", epoch=2)
    first = new.encode(hb(Context.from_vv({"a~1": 1})).to_state())
    second = new.encode(hb(Context.from_vv({"a~1": 2})).to_state())
    assert dec.decode(second).state is None  # seq 2 of epoch 2: base 1 of epoch 2 not held
    assert dec.decode(first).state["ctx"] == Context.from_vv({"a~1": 1})
    assert dec.decode(second).state["ctx"] == Context.from_vv({"a~1": 2})


def test_membership_built_from_streams_matches_one_built_from_full_heartbeats_under_loss():
    rng = random.Random(11)
    senders = {n: StreamEncoder("hb", n, epoch=1, full_every=8) for n in ("a", "b", "c")}
    dec = StreamDecoder(SCHEMA)
    via_stream, via_full = Membership(local="me"), Membership(local="me")
    ctx = {n: Context() for n in senders}
    last_applied: dict[str, Heartbeat] = {}
    for t in range(1, 300):
        n = rng.choice(sorted(senders))
        ctx[n] = grow(rng, ctx[n]).add(Dot(f"{n}~1", ctx[n].max_seq(f"{n}~1") + 1))
        beat = Heartbeat(f"{n}~1", n, "eu", "default", ctx[n], 10_000 + t, t, {}, {}, 0, {}, frozenset())
        data = senders[n].encode(beat.to_state(), want=set())
        if rng.random() < 0.3:
            continue  # lost on the wire
        rec = dec.decode(data)
        if rec.state is not None:
            got = Heartbeat.from_state(n, rec.state)
            assert got == beat  # never a state the sender did not have
            via_stream.observe(got, 10_000 + t)
            last_applied[n] = beat
        for s in dec.resync["hb"]:
            senders[s].request_full()  # the receiver's request, heard by the sender
    for beat in last_applied.values():
        via_full.observe(beat, 20_000)
    assert {h.name: h.context for h in via_stream} == {h.name: h.context for h in via_full}
    assert via_stream.stable_context() == via_full.stable_context()


@pytest.mark.parametrize("body", [
    "not a list",
    ["hb", "a", 1, 1, 0, [], "sections"],
    ["hb", "", 1, 1, 0, [], []],
    ["hb", "a", -1, 1, 0, [], []],
    ["hb", "a", 1, 3, 1, [], []],  # base must be seq - 1
    ["nope", "a", 1, 1, 0, [], []],
    ["hb", "a", 1, 1, 0, [1], []],
    ["hb", "a", 1, 1, 0, [], [["zzz", [], []]]],  # unknown section
    ["hb", "a", 1, 1, 0, [], [["ctx", [["r", 0, []]], []]]],  # empty context row
    ["hb", "a", 1, 1, 0, [], [["pos", [["b", 1], ["a", 2]], []]]],  # unsorted keys
    ["hb", "a", 1, 1, 0, [], [["pos", [], ["x"]]]],  # a full message drops nothing
])
def test_bad_stream_messages_raise_corrupt_record_and_change_nothing(body):
    dec = StreamDecoder(SCHEMA)
    with pytest.raises(CorruptRecord):
        dec.decode(packb(["ctlstream", 1, body]))
    assert dec.stats.fulls == dec.stats.deltas == 0


def test_a_newer_stream_version_is_unsupported_and_a_bad_heartbeat_state_is_corrupt():
    with pytest.raises(UnsupportedVersion):
        StreamDecoder(SCHEMA).decode(packb(["ctlstream", 99, []]))
    enc = StreamEncoder("hb", "a", epoch=1)
    state = dict(hb(Context()).to_state())
    state["s"] = {**state["s"], "wall_ms": -5}
    rec = StreamDecoder(SCHEMA).decode(enc.encode(state))
    with pytest.raises(CorruptRecord):
        Heartbeat.from_state("a", rec.state)


def test_retained_keeps_the_last_full_message_and_the_deltas_after_it():
    enc = StreamEncoder("hb", "a", epoch=1, full_every=3)
    kept = Retained()
    msgs = [enc.encode(hb(Context.from_vv({"a~1": i})).to_state()) for i in range(1, 6)]
    for m in msgs:
        kept.add("a", m)
    assert [d for _, d in kept.replay()] == msgs[3:]  # full at seq 4, delta at seq 5
    assert peek(msgs[3]) == ("a", 0) and peek(msgs[4]) == ("a", 4) and peek(b"junk") is None
    dec = StreamDecoder(SCHEMA)
    states = [dec.decode(d).state for _, d in kept.replay()]
    assert states[-1]["ctx"] == Context.from_vv({"a~1": 5})
