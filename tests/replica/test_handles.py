"""Write handles (``replica.writer(field, op)``): the same result as ``write()``, always.

Each test runs the same writes once through ``write()`` and once through a handle on two
replicas with the same identity and the same (fake) wall clock, and compares what users
see: state, context, and the events of the records appended to the log (decoded). The
handles' fallbacks are covered one by one: values the fast path does not take, integers
beyond 64 bits, subscribers, a table holding a stamp ahead of the clock, a closed replica,
permissions changed after the handle was made, and a store reloaded from a snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Feature, Replica, Schema
from crdtsync.clock import HLC, make_hlc
from crdtsync.errors import PermissionDenied, PolicyViolation
from crdtsync.events import AvroCodec, Batch, Codec, Event, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.types.collections import ORSet
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

from ._parts import sync

SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter), Feature("tags", ORSet)]
USER = ("s", "c", "tags")
ID = ReplicaIdentity("a", "i1", "default", "default")
WALL = 1_000_000


async def _open(log: MemoryLog | None = None, schema: Any = SCHEMA, data_dir: Path | None = None,
                wall: list[int] | None = None, codec: Codec | None = None) -> Replica:
    clock = wall if wall is not None else [WALL]
    kw: dict[str, Any] = {} if data_dir is not None else {"identity": ID}
    if codec is not None:
        kw["codec"] = codec
    return await Replica.open(data_dir, schema=schema, log=log if log is not None else MemoryLog(),
                              follow=False, control=False, hlc=HLC(clock=lambda: clock[0]), **kw)


async def _events(log: MemoryLog, codec: Codec | None = None) -> list[Event]:
    codec = codec or MsgpackCodec()
    return [ev async for e in log.read(0) for ev in codec.decode(e.payload).events]


def _user(r: Replica) -> dict[str, Any]:
    return {f: t for f, t in r.export_state().items() if f in USER}


async def _both(script: Callable[[Replica, bool], Any],
                codec: Codec | None = None) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Run ``script(replica, use_handles)`` both ways; what each replica ends with."""
    out = []
    for handles in (False, True):
        log = MemoryLog()
        r = await _open(log, codec=codec)
        res = script(r, handles)
        if asyncio.iscoroutine(res):
            await res
        views = {k: r.view(k, USER).values for k in ("k", "k2", "k3")}
        await r.flush()
        out.append((_user(r), r.context, await _events(log, codec), views))
        await r.close()
    return out[0], out[1]


def _do(r: Replica, handles: bool, field: str, op: str, key: str, *args: Any) -> None:
    if handles:
        r.writer(field, op)(key, *args)
    else:
        r.write(field, key, op, *args)


VALUES = [1, -(2**63), 2**63, 2**64 - 1, 1.5, -0.0, "x", "", b"\x00", True, False, None, [1, [2]], {"a": {"b": 1}}]


CODECS = [None, MsgpackCodec(write_version=1), AvroCodec()]


@pytest.mark.parametrize("codec", CODECS, ids=["msgpack-v2", "msgpack-v1", "avro"])
@sync
async def test_handle_writes_equal_write_calls_in_state_context_and_records(codec: Codec | None) -> None:
    def script(r: Replica, handles: bool) -> None:
        s = r.writer("s", "set") if handles else None
        for i, v in enumerate(VALUES):
            key = ("k", "k2", "k3")[i % 3]
            if s is not None:
                s(key, v)
            else:
                r.write("s", key, "set", v)
            _do(r, handles, "c", "increment", key, i + 1)
            if i % 4 == 0:
                _do(r, handles, "tags", "add", key, f"t{i}")

    by_write, by_handle = await _both(script, codec)
    assert by_handle[0] == by_write[0]  # state
    assert by_handle[1] == by_write[1]  # context
    assert by_handle[2] == by_write[2]  # the decoded events, in log order
    assert by_handle[3] == by_write[3]  # reads
    assert by_handle[3]["k"]["s"] == VALUES[-2]


FLAT = [[1733.2, "xxxx"], (1, "a"), [], [True, None, b"x", -0.0], [2**64 - 1, -(2**63)], ["only"], [1.5] * 40]


@pytest.mark.parametrize("codec", CODECS, ids=["msgpack-v2", "msgpack-v1", "avro"])
@sync
async def test_flat_lists_of_scalars_through_a_handle_equal_write_calls(codec: Codec | None) -> None:
    """The handle's fast path for flat lists (the Kafka benchmark's ``[score, label]``
    values): same state, context, decoded events and reads as ``write()``, mixed with
    scalars and with values it leaves to the general path in one record."""
    def script(r: Replica, handles: bool) -> None:
        s = r.writer("s", "set") if handles else None
        for i, v in enumerate(FLAT + [7, [1, [2]], "x", (2.5, "b")] + FLAT[::-1]):
            key = ("k", "k2", "k3")[i % 3]
            if s is not None:
                s(key, v)
            else:
                r.write("s", key, "set", v)

    by_write, by_handle = await _both(script, codec)
    assert by_handle == by_write
    assert by_handle[3]["k"]["s"] == [] and by_handle[3]["k3"]["s"] == [1733.2, "xxxx"]


@sync
async def test_a_flat_list_written_through_a_handle_is_a_copy() -> None:
    """The stored value is the list as it was at the write: changing it afterwards (or
    the list read back) changes nothing; a list the fast path refuses raises what
    ``write`` raises."""
    r = await _open()
    s = r.writer("s", "set")
    s("k", 0)  # (makes the table: the next write takes the fast path)
    v = [1733.2, "xxxx"]
    s("k", v)
    v.append("changed")
    got = r.value("s", "k")
    assert got == [1733.2, "xxxx"]
    got.append("also changed")
    assert r.value("s", "k") == [1733.2, "xxxx"]
    with pytest.raises(TypeError) as by_handle:
        s("k", [2**64])
    with pytest.raises(TypeError) as by_write:
        r.write("s", "k", "set", [2**64])
    assert str(by_handle.value) == str(by_write.value)
    await r.close()


@sync
async def test_handle_reads_its_own_writes_at_once() -> None:
    r = await _open()
    s, c = r.writer("s", "set"), r.writer("c", "increment")
    for v in (1, 2.5, "x", [1], None, 7):
        s("k", v)
        assert r.value("s", "k") == v
        assert r.view("k", ["s"]).values == {"s": v}
        assert r.state("s", "k").value() == v
    c("k")
    c("k", 4)
    assert r.value("c", "k") == 5 and r.view("k", ["c"]).values["c"] == 5
    assert r.pending == 8 and r.context.max_seq(r.actor) == r._writer.last_seq()
    await r.close()


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
@sync
async def test_integers_beyond_64_bits_raise_what_write_raises(value: int) -> None:
    r = await _open()
    with pytest.raises(ValueError) as by_write:
        r.write("s", "k", "set", value)
    with pytest.raises(ValueError) as by_handle:
        r.writer("s", "set")("k", value)
    assert str(by_handle.value) == str(by_write.value)
    assert r.pending == 0 and r.value("s", "k") is None  # nothing half-written
    await r.close()


@sync
async def test_counter_total_beyond_64_bits_raises_what_write_raises() -> None:
    r = await _open()
    r.write("c", "k", "increment", 2**63 - 2)
    with pytest.raises(ValueError) as by_write:
        r.write("c", "k", "increment", 5)
    with pytest.raises(ValueError) as by_handle:
        r.writer("c", "increment")("k", 5)
    assert str(by_handle.value) == str(by_write.value)
    assert r.value("c", "k") == 2**63 - 2 and r.pending == 1
    await r.close()


@sync
async def test_subscribers_get_a_change_per_handle_write_and_none_after_leaving() -> None:
    r = await _open()
    s, c = r.writer("s", "set"), r.writer("c", "increment")
    s("k", 0)  # planned without subscribers
    first = r._writer.next_seq
    seen: list[Any] = []
    stop = r.subscribe(seen.append)
    s("k", 1)
    c("k", 2)
    assert [(ch.field, ch.key, ch.event.delta.value(), ch.local) for ch in seen] == [
        ("s", "k", 1, True), ("c", "k", 2, True)]
    assert seen[0].event.seq == first and seen[1].event.seq == first + 1
    stop()
    s("k", 3)
    assert len(seen) == 2 and r.value("s", "k") == 3
    await r.close()


@sync
async def test_a_stamp_ahead_of_the_clock_wins_as_it_does_against_write() -> None:
    """A remote register whose stamp runs ahead of its event's (the clock observes the
    event's): the table then holds a stamp beyond this clock, and the old row wins
    against a handle write exactly as against write(). Caught a bug: the handle's
    fallback took a second stamp, so its events differed from write()'s."""
    results = []
    for handles in (False, True):
        log = MemoryLog()
        r = await _open(log)
        if handles:
            r.writer("s", "set")("k0", 0)  # the fast path is set up (an overlay exists)
        else:
            r.write("s", "k0", "set", 0)
        ahead = make_hlc(WALL + 10_000)
        ev = Event("z~1", 1, make_hlc(WALL), "s", "k", LWWRegister._raw(ahead, "z~1", "old"))
        await log.append([MsgpackCodec().encode(Batch.of([ev], {"region": "default", "role": "default"}))])
        await r.catch_up()
        assert r.hlc.now() < ahead
        _do(r, handles, "s", "set", "k", "new")
        _do(r, handles, "s", "set", "k2", "fresh")
        results.append((_user(r), r.view("k", ["s"]).values, r.value("s", "k2")))
        await r.close()
    assert results[0] == results[1]
    assert results[1][1] == {"s": "old"} and results[1][2] == "fresh"


@sync
async def test_a_table_stamp_beyond_the_clock_makes_the_handle_take_the_general_path() -> None:
    r = await _open()
    s = r.writer("s", "set")
    s("k0", 0)
    tbl = r.store.tables["s"]
    ahead = make_hlc(WALL + 10_000)
    tbl["k"] = LWWRegister._raw(ahead, "z~1", "old")  # a row the clock has not observed
    s("k", "new")
    w = await _open()
    w.write("s", "k0", "set", 0)
    w.store.tables["s"]["k"] = LWWRegister._raw(ahead, "z~1", "old")
    w.write("s", "k", "set", "new")
    assert r.state("s", "k") == w.state("s", "k")
    assert r.value("s", "k") == w.value("s", "k") == "old"
    await r.close()
    await w.close()


@sync
async def test_a_closed_replica_refuses_handle_writes() -> None:
    r = await _open()
    s, c, t = r.writer("s", "set"), r.writer("c", "increment"), r.writer("tags", "add")
    s("k", 1)
    await r.close()
    for h, arg in ((s, 2), (c, 1), (t, "x")):
        with pytest.raises(RuntimeError, match="closed"):
            h("k", arg)


@sync
async def test_a_definition_changed_after_the_handle_was_made_is_enforced_on_the_next_call() -> None:
    """Caught two bugs: handles re-planned only when the writer's generation moved, which a
    definition added to the schema in code does not do (write() refused, handles wrote
    on); and a generic handle whose re-plan raised wrote on with its old plan the next call."""
    schema = Schema(SCHEMA)
    r = await _open(schema=schema)
    s, c, t = r.writer("s", "set"), r.writer("c", "increment"), r.writer("tags", "add")
    s("k", 1)
    c("k")
    t("k", "x")
    n = r.pending
    for f, typ in (("s", LWWRegister), ("c", GCounter), ("tags", ORSet)):
        schema.add(Feature(f, typ, version=2, writers={"admin"}))
    for h, f, arg in ((s, "s", 2), (c, "c", 1), (t, "tags", "y")):
        with pytest.raises(PermissionDenied):
            r.write(f, "k", "set" if f == "s" else ("add" if f == "tags" else "increment"), arg)
        for _ in range(2):  # and again: a refused re-plan is not taken for a plan
            with pytest.raises(PermissionDenied):
                h("k", arg)
    assert r.pending == n and r.value("s", "k") == 1 and r.value("c", "k") == 1
    await r.close()


@sync
async def test_a_policy_raised_above_local_after_the_handle_was_made_is_a_policy_violation() -> None:
    from crdtsync.policy import Strong

    schema = Schema(SCHEMA)
    r = await _open(schema=schema)
    s = r.writer("s", "set")
    s("k", 1)
    schema.add(Feature("s", LWWRegister, version=2, policy=Strong(timeout=2)))
    with pytest.raises(PolicyViolation):
        r.write("s", "k", "set", 2)
    with pytest.raises(PolicyViolation):
        s("k", 2)
    assert r.value("s", "k") == 1
    await r.close()


@sync
async def test_handles_made_before_a_snapshot_reload_write_into_the_reloaded_tables(tmp_path: Path) -> None:
    log = MemoryLog()
    r = await _open(log, data_dir=tmp_path / "r")
    s, c = r.writer("s", "set"), r.writer("c", "increment")
    s("k", 1)
    c("k", 2)
    await r.flush()
    await r.snapshot()
    old_s, old_c = r.store.tables["s"], r.store.tables["c"]
    r.store.load(r.export_state(), r.context, r.position)  # what recovery does
    assert r.store.tables["s"] is not old_s and r.store.tables["c"] is not old_c
    s("k", 3)
    c("k", 4)
    assert r.value("s", "k") == 3 and r.view("k", ["s", "c"]).values == {"s": 3, "c": 6}
    assert "k" not in old_s.own and old_s.get("k").value() == 1  # nothing went to the old table
    assert old_c["k"].value() == 2
    await r.flush()
    ref = await _open(MemoryLog())
    async for e in log.read(0):
        ref.applier.apply_record(e.position, e.payload)
    assert ref.value("s", "k") == 3 and ref.value("c", "k") == 6
    await r.close()
    await ref.close()


@sync
async def test_generic_and_specialised_handles_refuse_what_write_refuses() -> None:
    r = await _open()
    with pytest.raises(ValueError, match="no mutator"):
        r.writer("s", "increment")
    with pytest.raises(KeyError):
        r.writer("nope", "set")
    s = r.writer("s", "set")
    with pytest.raises(TypeError):
        s(1, "x")  # keys are str (caught a bug: the general path of a handle took any key)
    with pytest.raises(TypeError):
        r.writer("tags", "add")(1, "x")
    with pytest.raises(TypeError):
        r.writer("c", "increment")(1)
    with pytest.raises(TypeError):
        r.write("s", 1, "set", "x")  # type: ignore[arg-type]
    assert r.pending == 0
    await r.close()


@sync
async def test_handles_of_a_replica_removed_from_the_fleet_refuse_every_call() -> None:
    from crdtsync.errors import ReplicaRemoved

    log = MemoryLog()
    r = await Replica.open(schema=SCHEMA, log=log, identity=ID, follow=False, control=False)  # real clocks:
    other = await Replica.open(schema=SCHEMA, log=log, name="b", follow=False, control=False)  # (skew checks)
    handles = [(r.writer("s", "set"), 1), (r.writer("c", "increment"), 1), (r.writer("tags", "add"), "x")]
    for h, arg in handles:
        h("k", arg)
    await r.flush()
    await other.catch_up()
    other.observe_heartbeat(r.heartbeat())  # (what the control channel would carry)
    await other.remove_replica("a")
    await other.flush()
    await r.catch_up()
    n = r.pending
    for h, arg in handles:
        for _ in range(2):
            with pytest.raises(ReplicaRemoved):
                h("k", arg)
    assert r.pending == n
    await r.close()
    await other.close()


@sync
async def test_update_after_the_policy_was_raised_follows_the_new_policy() -> None:
    """``update()`` at LOCAL goes through cached handles: once the field's policy asks
    for more, the next update does what a replica that never cached a handle does (here:
    a sequenced operation in the log, not a LOCAL event)."""
    from crdtsync.policy import Strong

    outcomes = []
    for cached in (True, False):
        schema = Schema(SCHEMA)
        log = MemoryLog()
        r = await _open(log, schema=schema)
        if cached:
            await r.update("s", "k", "set", 1)  # makes and caches the handle
            await r.update("c", "k", "increment")
        schema.add(Feature("s", LWWRegister, version=2, policy=Strong(timeout=2)))
        schema.add(Feature("c", GCounter, version=2, policy=Strong(timeout=2)))
        evs = [await r.update("s", "k", "set", 2), await r.update("c", "k", "increment", 1)]
        logged = [type(e.delta).__name__ for e in await _events(log) if e.field in ("s", "c")]
        outcomes.append(([type(e.delta).__name__ for e in evs], logged[-2:], r.value("s", "k")))
        await r.close()
    assert outcomes[0] == outcomes[1]
    assert "LWWRegister" not in outcomes[1][0]
