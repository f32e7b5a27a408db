"""Admission: identity pins, removed incarnations, definitions, local write checks,
quarantine (also on a full disk) and events held back for a future timestamp."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdtsync import Feature, GCounter, LWWRegister, MemoryLog, Replica, Strong
from crdtsync.clock import HLC
from crdtsync.errors import CorruptRecord, PermissionDenied, ReplicaRemoved, ResidencyViolation
from crdtsync.events import Batch
from crdtsync.replica import admission as admission_mod
from crdtsync.replica.admission import Admission, HeldEvents
from crdtsync.replica.stats import ReplicaStats
from crdtsync.schema import SCHEMA_FIELD
from crdtsync.sequenced import FLEET_FIELD, SEQ_FIELD, SequencedOp

from .._disk import SmallDisk
from ._parts import CODEC, FakeClock, defs, event, ident

FIELDS = (
    Feature("clicks", GCounter),
    Feature("eu_only", LWWRegister, residency={"eu"}),
    Feature("limits", LWWRegister, writers={"risk"}),
    Feature("stock", GCounter, policy=Strong()),
)


def make(region: str = "eu", role: str = "default", scope: frozenset[str] | None = None,
         data_dir: Path | None = None, admins: frozenset[str] | None = None) -> Admission:
    stats = ReplicaStats()
    return Admission(ident(region=region, role=role), defs(*FIELDS, admins=admins, stats=stats), stats, scope,
                     data_dir)


# -- batches ------------------------------------------------------------------------
def test_an_origin_is_pinned_to_its_first_claim_and_a_forged_claim_is_refused() -> None:
    adm = make()
    assert adm.batch_verdict("b~1", "eu", "default") is None
    assert adm.batch_verdict("b~1", "eu", "default") is None, "the same claim again is fine"
    assert adm.batch_verdict("b~1", "us", "default") == "identity_mismatch"
    assert adm.batch_verdict("b~1", "eu", "admin") == "identity_mismatch"
    assert adm.pins["b~1"] == ("eu", "default"), "a refused claim does not move the pin"


def test_a_repeated_forged_claim_is_refused_every_time_but_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    adm = make()
    assert adm.batch_verdict("b~1", "eu", "default") is None
    with caplog.at_level("WARNING", logger="crdtsync.replica"):
        verdicts = [adm.batch_verdict("b~1", "us", "default") for _ in range(500)]
        assert adm.batch_verdict("b~1", "eu", "admin") == "identity_mismatch"
    assert verdicts == ["identity_mismatch"] * 500
    warned = [r.getMessage() for r in caplog.records if "first claimed" in r.getMessage()]
    assert len(warned) == 2, "one warning per distinct forged claim, not per batch"
    assert "('us', 'default')" in warned[0] and "('eu', 'admin')" in warned[1]


def test_a_malformed_claim_is_bad_identity_and_pins_nothing() -> None:
    adm = make()
    assert adm.batch_verdict("b~1", None, "default") == "bad_identity"
    assert adm.batch_verdict("b~1", "eu", 7) == "bad_identity"
    assert "b~1" not in adm.pins
    assert adm.batch_verdict("b~1", "us", "x") is None, "the first well-formed claim is the pin"


def test_own_events_claiming_another_identity_are_forged_once_recovered() -> None:
    adm = make(region="eu", role="default")
    me = adm.actor
    assert adm.batch_verdict(me, "us", "default") is None, "during recovery own records are read back, not judged"
    adm.pins.clear()
    adm.recovered = True
    assert adm.batch_verdict(me, "us", "default") == "identity_mismatch"
    assert adm.batch_verdict(me, "eu", "default") is None


def test_a_scoped_log_refuses_batches_from_regions_it_does_not_carry() -> None:
    adm = make(scope=frozenset({"eu"}))
    assert adm.batch_verdict("b~1", "us", "default") == "residency"
    assert adm.batch_verdict("c~1", "eu", "default") is None


def test_a_removed_incarnation_is_late_only_past_the_last_seq_its_removal_accepted() -> None:
    adm = make()
    assert not adm.late("b~1", 10**9), "not removed: never late"
    adm.removed["b~1"] = 5
    assert not adm.late("b~1", 5)
    assert adm.late("b~1", 6)
    adm.removed["b~1"] = 0  # pruned: everything refused
    assert adm.late("b~1", 1)


# -- events ---------------------------------------------------------------------------
def test_verdicts_on_events_follow_the_definitions() -> None:
    adm = make(region="eu")
    assert adm.verdict("clicks", "gcounter", "us", "default") is None
    assert adm.verdict("clicks", "lww", "eu", "default") == "wrong_type"
    assert adm.verdict("eu_only", "lww", "eu", "default") is None
    assert adm.verdict("eu_only", "lww", "us", "default") == "residency", "the writer's region is outside"
    assert adm.verdict("limits", "lww", "eu", "default") == "permission"
    assert adm.verdict("limits", "lww", "eu", "risk") is None
    assert adm.verdict("stock", "gcounter", "eu", "default") == "not_sequenced", "SEQUENCED fields take ops only"
    assert adm.verdict("stock", SequencedOp.TYPE_TAG, "eu", "default") is None
    assert adm.verdict("clicks", SequencedOp.TYPE_TAG, "eu", "default") == "not_sequenced"
    assert adm.verdict(SEQ_FIELD, "maxreg", "eu", "default") == "reserved_field"
    assert adm.verdict("unheard_of", "gcounter", "eu", "default") is None, "learned later, kept under its type"
    assert adm.verdict("unheard_of", SequencedOp.TYPE_TAG, "eu", "default") == "unknown_field"


def test_a_replica_outside_a_fields_residency_refuses_its_events_even_from_inside() -> None:
    adm = make(region="us")
    assert adm.verdict("eu_only", "lww", "eu", "default") == "residency"
    scoped = make(region="eu", scope=frozenset({"eu", "us"}))
    assert scoped.verdict("eu_only", "lww", "eu", "default") == "residency", "the log would carry it to us"


def test_only_admins_publish_definitions_and_fleet_records_are_lww() -> None:
    adm = make(admins=frozenset({"admin"}))
    assert adm.verdict(SCHEMA_FIELD, "lww", "eu", "default") == "permission"
    assert adm.verdict(SCHEMA_FIELD, "lww", "eu", "admin") is None
    assert adm.verdict(FLEET_FIELD, "lww", "eu", "default") is None
    assert adm.verdict(FLEET_FIELD, "gcounter", "eu", "admin") == "wrong_type"


def test_a_replica_records_only_its_own_join_and_only_admins_remove() -> None:
    adm = make(admins=frozenset({"admin"}))
    assert adm.fleet_allowed("join/b~1", "b~1", "default")
    assert not adm.fleet_allowed("join/c~1", "b~1", "admin"), "nobody joins on another's behalf"
    assert not adm.fleet_allowed("remove/c~1", "b~1", "default")
    assert adm.fleet_allowed("remove/c~1", "b~1", "admin")
    assert not adm.fleet_allowed("other/c~1", "b~1", "admin")


# -- local writes -------------------------------------------------------------------------
def test_check_write_refuses_what_peers_would_refuse() -> None:
    adm = make(region="us")
    assert adm.check_write("clicks", "k").name == "clicks"
    with pytest.raises(ResidencyViolation):
        adm.check_write("eu_only")
    with pytest.raises(PermissionDenied):
        adm.check_write("limits")
    with pytest.raises(KeyError):
        adm.check_write("unheard_of")
    with pytest.raises(TypeError):
        adm.check_write("clicks", 7)  # type: ignore[arg-type]


def test_check_write_refuses_a_field_the_scoped_log_would_carry_out_of_its_residency() -> None:
    adm = make(region="eu", scope=frozenset({"eu", "us"}))
    with pytest.raises(ResidencyViolation, match="scoped"):
        adm.check_write("eu_only")
    assert make(region="eu", scope=frozenset({"eu"})).check_write("eu_only").name == "eu_only"


def test_a_removed_incarnation_may_not_write_at_all() -> None:
    adm = make()
    adm.removed[adm.actor] = 3
    with pytest.raises(ReplicaRemoved, match="fresh data directory"):
        adm.check_write("clicks", "k")


# -- quarantine ---------------------------------------------------------------------------
def test_quarantine_keeps_the_record_and_its_reason_and_counts_it(tmp_path: Path) -> None:
    adm = make(data_dir=tmp_path)
    adm.quarantine(42, b"\x00garbage", CorruptRecord("bad magic"))
    qdir = tmp_path / "quarantine"
    assert (qdir / f"{42:020d}.bin").read_bytes() == b"\x00garbage"
    assert "CorruptRecord: bad magic" in (qdir / f"{42:020d}.txt").read_text()
    assert sorted(p.name for p in qdir.iterdir()) == [f"{42:020d}.bin", f"{42:020d}.txt"], "no temporary left"
    assert adm.stats.records_quarantined == 1 and adm.stats.storage_errors == 0


def test_quarantine_without_a_data_directory_still_counts() -> None:
    adm = make(data_dir=None)
    adm.quarantine(1, b"x", CorruptRecord("bad"))
    assert adm.stats.records_quarantined == 1


def test_quarantine_on_a_full_disk_leaves_no_partial_file_counts_it_and_goes_on(small_disk: SmallDisk) -> None:
    data = small_disk.path / "r"
    data.mkdir()
    spare = small_disk.path / "spare"
    spare.write_bytes(b"\1" * 8192)  # freed after filling: room for part of a record only
    small_disk.fill()
    spare.unlink()
    adm = make(data_dir=data)
    payload = bytes(range(256)) * 256  # 64 KiB: the disk takes its first pages, then ENOSPC
    adm.quarantine(7, payload, CorruptRecord("bad magic"))  # must not raise
    assert adm.stats.records_quarantined == 1
    assert adm.stats.storage_errors == 1
    left = sorted(p.name for p in (data / "quarantine").iterdir()) if (data / "quarantine").exists() else []
    assert left == [], f"a quarantine write the disk refused left {left} behind"
    # the next record is kept once the disk has room again
    small_disk.free()
    adm.quarantine(8, payload, CorruptRecord("bad magic"))
    assert (data / "quarantine" / f"{8:020d}.bin").read_bytes() == payload
    assert adm.stats.records_quarantined == 2 and adm.stats.storage_errors == 1


# -- held events ----------------------------------------------------------------------------
def test_held_events_are_released_once_the_clock_catches_up() -> None:
    stats = ReplicaStats()
    held = HeldEvents(stats, max_drift_ms=1_000, actor="a~i1")
    early = event("b~1", 1, "clicks", "k", GCounter().increment(1, actor="b~1"), wall_ms=50_000)
    later = event("b~1", 2, "clicks", "k", GCounter().increment(1, actor="b~1"), wall_ms=60_000)
    held.hold(later, {"region": "eu", "role": "default"}, 4)
    held.hold(early, {"region": "eu", "role": "default"}, 3)
    assert len(held) == 2 and stats.events_held == 2
    assert held.due == 49_000, "the earliest may apply max_drift_ms before its stamp"
    assert held.take_due(48_999) == []
    ready = held.take_due(49_000)
    assert [h[1] for h in ready] == [early] and stats.events_held == 1
    assert held.due == 59_000
    assert [h[1] for h in held.take_due(10**9)] == [later]
    assert not held and stats.events_held == 0


def test_while_events_are_held_a_snapshot_names_the_record_before_the_first_of_them() -> None:
    held = HeldEvents(ReplicaStats(), max_drift_ms=0, actor="a~i1")
    assert held.floor(10) == 10, "nothing held: the last applied position"
    ev = event("b~1", 1, "clicks", "k", GCounter().increment(1, actor="b~1"), wall_ms=5_000)
    held.hold(ev, {}, 6)
    held.hold(ev._replace(seq=2), {}, 4)
    assert held.floor(10) == 4
    held.hold(ev._replace(seq=3), {}, None)  # held from the very first record
    assert held.floor(10) is None
    held.take_due(10**9)
    assert held.floor(10) == 10


def test_events_beyond_the_held_limit_are_not_lost_they_wait_for_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_mod, "MAX_HELD", 2)
    held = HeldEvents(ReplicaStats(), max_drift_ms=0, actor="a~i1")
    ev = event("b~1", 1, "clicks", "k", GCounter().increment(1, actor="b~1"), wall_ms=5_000)
    held.hold(ev, {}, 8)
    held.hold(ev._replace(seq=2), {}, 9)
    held.hold(ev._replace(seq=3), {}, 5)  # over the limit: dropped from memory...
    assert len(held) == 2
    assert held.floor(20) == 5, "...so snapshots stay before it and a restart re-reads it"
    held.take_due(10**9)
    assert held.floor(20) == 5, "the overflowed event was never applied: the floor stays"


# -- through a replica: what a user sees --------------------------------------------------
def _record(origin: str, seq: int, region: str, wall_ms: int = 1_000) -> bytes:
    # a GCounter delta carries the origin's running total: its seq-th increment of 1
    ev = event(origin, seq, "clicks", "k", GCounter().increment(seq, actor=origin), wall_ms=wall_ms)
    return CODEC.encode(Batch.of([ev], {"region": region, "role": "default"}))


def test_a_replica_refuses_a_forged_origin_counts_it_and_still_applies_the_genuine_event() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        async with Replica.open(schema=FIELDS, log=log, name="a", region="eu", follow=False, control=False) as r:
            await log.append([_record("b~1", 1, "eu")])
            await log.append([_record("b~1", 2, "us")])  # forged: b~1 first claimed eu
            await r.catch_up()
            assert r.value("clicks", "k") == 1
            assert r.stats.events_rejected.get("identity_mismatch") == 1
            await log.append([_record("b~1", 2, "eu")])  # the genuine seq 2 is not a "duplicate"
            await r.catch_up()
            assert r.value("clicks", "k") == 2

    asyncio.run(scenario())


def test_a_replica_holds_a_future_event_and_applies_it_once_its_clock_catches_up() -> None:
    async def scenario() -> None:
        clock = FakeClock(1_000_000)
        log = MemoryLog()
        hlc = HLC(max_drift_ms=1_000, clock=clock)
        async with Replica.open(schema=FIELDS, log=log, name="a", region="eu", follow=False, control=False,
                                hlc=hlc) as r:
            await log.append([_record("b~1", 1, "eu", wall_ms=1_010_000)])
            await r.catch_up()
            assert r.value("clicks", "k") == 0 and r.stats.events_held == 1
            assert r.stats.events_rejected.get("future_timestamp") == 1
            clock.ms = 1_009_000
            assert r.retry_held() == 1
            assert r.value("clicks", "k") == 1 and r.stats.events_held == 0

    asyncio.run(scenario())

