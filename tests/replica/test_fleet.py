"""The fleet: the roster from join records, removal of an incarnation (admins only), and
pruning of removed incarnations only once all their events are causally stable."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import Feature, GCounter
from crdtsync.clock import HLC, Context
from crdtsync.errors import PermissionDenied
from crdtsync.events import Batch
from crdtsync.log import MemoryLog
from crdtsync.replica.admission import Admission
from crdtsync.replica.fleet import Fleet
from crdtsync.replica.stats import ReplicaStats
from crdtsync.sequenced import FLEET_FIELD
from crdtsync.types.registers import LWWRegister

from ._parts import CODEC, FakeClock, defs, event, heartbeat, ident, membership, skew, store, writer

ME = ident("a", region="eu", role="admin", incarnation="i1")
B = ident("b", region="eu", incarnation="j1")
C = ident("c", region="us", incarnation="k1")


class Parts:
    def __init__(self, role: str = "admin", admins: frozenset[str] | None = frozenset({"admin"})) -> None:
        self.me = ident("a", region="eu", role=role, incarnation="i1")
        self.stats = ReplicaStats()
        self.defs = defs(Feature("clicks", GCounter), admins=admins, stats=self.stats)
        self.store = store(self.me.actor, self.defs)
        self.membership = membership(self.me)
        self.mono = FakeClock(0)
        self.skew = skew(self.stats, self.mono)
        self.admission = Admission(self.me, self.defs, self.stats, None, None)
        self.removals = 0
        self.fleet = Fleet(self.me, self.store, self.membership, self.admission, self.defs, self.skew, self.stats,
                           self._removed)
        self.log = MemoryLog()
        self.writer = writer(self.me, self.store, self.defs, self.admission, self.stats, HLC(), self.log)

    def _removed(self) -> None:
        self.removals += 1

    def hear(self, who, ctx: Context, wall_ms: int = 1_000, pruned: frozenset[str] = frozenset()) -> None:  # type: ignore[no-untyped-def]
        self.membership.observe(heartbeat(who, ctx, wall_ms, pruned=pruned), 1_000)


def join(who, ts: int = 1) -> LWWRegister:  # type: ignore[no-untyped-def]
    return LWWRegister().set({"name": who.name, "region": who.region, "role": who.role}, actor=who.actor, ts=ts)


def test_join_records_make_the_roster_and_members_survive_without_heartbeats() -> None:
    p = Parts()
    p.fleet.learn(f"join/{B.actor}", join(B), origin=B.actor)
    p.fleet.learn(f"join/{C.actor}", join(C), origin=C.actor)
    assert p.fleet.members() == frozenset({"b", "c"}), "quorum sizes do not depend on who is heard right now"
    assert p.fleet.members("eu") == frozenset({"b"})
    assert p.fleet.members(frozenset({"x", "b"})) == frozenset({"x", "b"}), "a name group is exactly its names"
    p.hear(ME, Context())
    assert p.fleet.members() == frozenset({"a", "b", "c"})


def test_only_an_incarnation_records_its_own_join_and_malformed_records_are_counted() -> None:
    p = Parts()
    p.fleet.learn(f"join/{B.actor}", join(B), origin=C.actor)
    p.fleet.learn("join/x~1", LWWRegister().set("not a dict", actor="x~1", ts=1), origin="x~1")
    p.fleet.learn("remove/x~1", LWWRegister().set({"upto": "3"}, actor="a~i1", ts=1))
    assert p.fleet.roster == {}
    assert p.stats.events_rejected == {"bad_fleet_record": 3}


def test_a_later_join_of_the_same_name_is_its_new_incarnation() -> None:
    p = Parts()
    b2 = ident("b", region="eu", incarnation="j2")
    p.fleet.learn(f"join/{b2.actor}", join(b2, ts=20), origin=b2.actor)
    p.fleet.learn(f"join/{B.actor}", join(B, ts=10), origin=B.actor)  # older: read later, still older
    assert p.fleet.roster["b"][0] == b2.actor


def test_this_replica_knows_whether_the_log_records_its_join() -> None:
    p = Parts()
    assert not p.fleet.joined()
    key, value = p.fleet.join_record()
    assert key == f"join/{p.me.actor}" and value == {"name": "a", "region": "eu", "role": "admin"}
    p.fleet.learn(key, LWWRegister().set(value, actor=p.me.actor, ts=1), origin=p.me.actor)
    assert p.fleet.joined()


def test_a_removal_refuses_the_incarnations_later_events_and_stops_counting_it() -> None:
    p = Parts()
    p.fleet.learn(f"join/{C.actor}", join(C), origin=C.actor)
    p.skew.observe("c", 5_000)
    p.fleet.learn(f"remove/{C.actor}", LWWRegister().set({"upto": 3, "upto_s": 1}, actor=p.me.actor, ts=2))
    assert p.admission.removed == {C.actor: 3, f"{C.actor}/s": 1}
    assert not p.admission.late(C.actor, 3) and p.admission.late(C.actor, 4)
    assert p.membership.is_removed(C.actor)
    assert p.skew.fleet_now_ms() is None, "its clock no longer counts"
    assert p.fleet.members() == frozenset(), "nor in quorums"
    assert p.removals == 1, "cached write permissions are invalidated"


def test_only_an_admin_removes_and_only_a_replica_that_is_heard_from() -> None:
    async def scenario() -> None:
        p = Parts(role="default")
        with pytest.raises(PermissionDenied):
            await p.fleet.remove("c", p.writer)
        q = Parts()
        with pytest.raises(KeyError):
            await q.fleet.remove("c", q.writer)

    asyncio.run(scenario())


def test_remove_records_the_last_seqs_it_accepts_in_the_log() -> None:
    async def scenario() -> None:
        p = Parts()
        p.store.set_context(Context().add_range(C.actor, 1, 4).add_range(f"{C.actor}/s", 1, 2))
        p.hear(C, Context())
        assert await p.fleet.remove("c", p.writer) == C.actor
        assert p.admission.removed == {C.actor: 4, f"{C.actor}/s": 2}
        records = [CODEC.decode(e.payload) async for e in p.log.read(0)]
        assert len(records) == 1
        (ev,) = records[0].events
        assert (ev.field, ev.key) == (FLEET_FIELD, f"remove/{C.actor}")
        assert ev.delta.value() == {"name": "c", "upto": 4, "upto_s": 2}

    asyncio.run(scenario())


def test_a_removed_incarnation_is_pruned_only_once_every_known_replica_has_all_its_events() -> None:
    p = Parts()
    cdots = Context().add_range(C.actor, 1, 3)
    p.store.set_context(cdots.add_range(B.actor, 1, 2))
    p.fleet.learn_removal(C.actor, 3, 0)
    p.hear(ME, p.store.ctx())
    p.hear(B, Context().add_range(C.actor, 1, 2))  # b still misses c's third event
    assert p.fleet.reclaim() == [f"{C.actor}/s"], "nothing sequenced to wait for; c itself is not stable"
    assert C.actor in p.store.ctx().replicas()
    p.hear(B, cdots, wall_ms=1_001)
    assert p.fleet.reclaim() == [C.actor]
    assert C.actor not in p.store.ctx().replicas(), "pruned from the context"
    assert p.store.ctx().max_seq(B.actor) == 2, "other origins untouched"
    assert p.fleet.pruned == {C.actor, f"{C.actor}/s"}
    assert p.admission.late(C.actor, 1), "after pruning, everything of c is refused"
    assert p.fleet.reclaim() == [], "nothing left to prune"


def test_a_peer_that_already_pruned_counts_as_stable() -> None:
    p = Parts()
    p.store.set_context(Context().add_range(C.actor, 1, 3))
    p.fleet.learn_removal(C.actor, 3, 0)
    p.hear(ME, p.store.ctx())
    p.hear(B, Context(), pruned=frozenset({C.actor}))  # b pruned c: its context no longer names it
    assert C.actor in p.fleet.reclaim()


def test_nothing_is_pruned_while_no_replica_is_known() -> None:
    p = Parts()
    p.fleet.learn_removal(C.actor, 3, 2)
    assert p.fleet.reclaim() == []


def test_stable_context_is_what_every_known_replica_and_this_one_applied() -> None:
    p = Parts()
    p.store.set_context(Context().add_range(B.actor, 1, 5))
    p.hear(B, Context().add_range(B.actor, 1, 7))
    assert p.fleet.stable_context() == Context().add_range(B.actor, 1, 5)


def test_a_replica_removed_and_pruned_here_refuses_a_replayed_removal_of_it() -> None:
    # learning the removal again (the log is re-read) must not re-open the pruned actor
    p = Parts()
    p.fleet.learn_removal(C.actor, 0, 0)
    p.hear(ME, Context())
    assert set(p.fleet.reclaim()) == {C.actor, f"{C.actor}/s"}
    p.fleet.learn_removal(C.actor, 3, 0)
    assert p.admission.removed[C.actor] == 0 and p.admission.late(C.actor, 1)


def test_a_join_record_read_back_from_the_log_is_learned() -> None:
    ev = event(B.actor, 1, FLEET_FIELD, f"join/{B.actor}", join(B))
    batch = CODEC.decode(CODEC.encode(Batch.of([ev], {"region": "eu", "role": "default"})))
    p = Parts()
    p.fleet.learn(batch.events[0].key, batch.events[0].delta, origin=batch.origin)
    assert p.fleet.roster["b"][0] == B.actor


def test_the_removed_replicas_own_last_heartbeat_does_not_block_pruning() -> None:
    p = Parts()
    p.hear(C, Context().add_range(C.actor, 1, 2))  # its last report, before its third write
    p.store.set_context(Context().add_range(C.actor, 1, 3))
    p.fleet.learn_removal(C.actor, 3, 0)
    p.hear(ME, p.store.ctx())
    assert C.actor in p.fleet.reclaim()
