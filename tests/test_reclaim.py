"""Removing a replica from the fleet: the decision replicates, the removed incarnation is
refused, and once its events are causally stable it is pruned from every context."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from crdtsync import Feature, MemoryLog, ORSet, Replica
from crdtsync.errors import ReplicaRemoved
from crdtsync.events import Batch, MsgpackCodec
from crdtsync.types.collections import ORSet as _ORSet
from tests._wait import until

SCHEMA = [Feature("tags", ORSet)]
_until = functools.partial(until, timeout=5.0)



async def _fleet(log):
    return [await Replica.open(log=log, schema=SCHEMA, name=n, heartbeat_interval=0.02) for n in ("a", "b", "x")]


def test_removed_replica_is_pruned_once_stable_and_refused_after():
    async def main():
        log = MemoryLog()
        a, b, x = await _fleet(log)
        try:
            for i in range(5):
                await x.update("tags", "k", "add", f"x{i}")
            await _until(lambda: all(r.membership.get("x") is not None for r in (a, b)))
            removed = await a.remove_replica("x")
            assert removed == x.actor
            # every remaining replica prunes x once all of x's events are stable
            await _until(lambda: all(x.actor in r.fleet.pruned for r in (a, b)))
            for r in (a, b):
                assert x.actor not in r.context.vv
                assert r.value("tags", "k") == {f"x{i}" for i in range(5)}  # its past writes stay
                assert "x" not in r.membership.members()
            # x learns it was removed and refuses to write
            await _until(lambda: x.actor in x.admission.removed)
            with pytest.raises(ReplicaRemoved, match="fresh data directory"):
                await x.update("tags", "k", "add", "late")
            # a forged event under x's old identity (any seq) is refused and counted
            codec = MsgpackCodec()
            forged = x._writer.write_raw("tags", "k", _ORSet, "add", ("forged",), {})
            x._writer.drop_pending()
            await log.append([codec.encode(Batch.of([forged], {"region": "default", "role": "default"}))])
            await _until(lambda: all(r.stats.events_rejected.get("removed_replica", 0) >= 1 for r in (a, b)))
            for r in (a, b):
                assert "forged" not in r.value("tags", "k")
                assert x.actor not in r.context.vv
        finally:
            for r in (a, b, x):
                await r.close()

    asyncio.run(main())


def test_new_incarnation_of_a_removed_replica_is_accepted():
    async def main():
        log = MemoryLog()
        a, b, x = await _fleet(log)
        await x.update("tags", "k", "add", "old")
        await _until(lambda: a.membership.get("x") is not None)
        await a.remove_replica("x")
        await x.close()
        x2 = await Replica.open(log=log, schema=SCHEMA, name="x", heartbeat_interval=0.02)
        try:
            assert x2.actor != x.actor
            await x2.update("tags", "k", "add", "new")
            await _until(lambda: "new" in a.value("tags", "k") and "new" in b.value("tags", "k"))
            await _until(lambda: a.membership.get("x") is not None and a.membership.get("x").actor == x2.actor)
        finally:
            for r in (a, b, x2):
                await r.close()

    asyncio.run(main())


def test_only_admin_roles_remove_replicas_or_publish_definitions():
    from crdtsync import Feature as F
    from crdtsync import GCounter
    from crdtsync.clock import make_hlc
    from crdtsync.errors import PermissionDenied
    from crdtsync.events import Event
    from crdtsync.schema import SCHEMA_FIELD
    from crdtsync.sequenced import FLEET_FIELD
    from crdtsync.types.registers import LWWRegister

    async def main():
        log = MemoryLog()
        kw = dict(log=log, schema=SCHEMA, heartbeat_interval=0.02, admins={"ops"})
        a = await Replica.open(name="a", role="ops", **kw)
        b = await Replica.open(name="b", role="edge", **kw)
        try:
            await _until(lambda: b.membership.get("a") is not None)
            with pytest.raises(PermissionDenied, match="may not remove"):
                await b.remove_replica("a")
            codec, meta = MsgpackCodec(), {"region": "default", "role": "edge"}
            now = make_hlc(int(time.time() * 1000))
            forged = [
                # an edge removing the admin, joining on behalf of someone else,
                # and redefining a field: all refused
                Event("m~1", 1, now, FLEET_FIELD, f"remove/{a.actor}",
                      LWWRegister().set({"name": "a", "upto": 1, "upto_s": 0}, actor="m~1", ts=now)),
                Event("m~1", 2, now, FLEET_FIELD, "join/ghost~1",
                      LWWRegister().set({"name": "ghost", "region": "default", "role": "x"}, actor="m~1", ts=now)),
                Event("m~1", 3, now, SCHEMA_FIELD, "tags",
                      LWWRegister().set(F("tags", GCounter).to_dict(), actor="m~1", ts=now)),
            ]
            await log.append([codec.encode(Batch.of(forged, meta))])
            await a.sync()
            assert a.stats.events_rejected.get("permission") == 3
            assert a.actor not in a.admission.removed and "ghost" not in a.members()
            await a.update("tags", "k", "add", "still-an-orset")
            assert a.value("tags", "k") == {"still-an-orset"}
            # a non-admin replica keeps its definitions to itself instead of publishing
            # events everyone would reject
            c = await Replica.open(name="c", role="edge", **{**kw, "schema": [*SCHEMA, F("extra", GCounter)]})
            await c.close()
            await a.sync()
            assert a.stats.events_rejected.get("permission") == 3
            assert a.schema.get("extra") is None and "extra" not in a.definitions.remote
            # the admin's own removal goes through
            await a.remove_replica("b")
            await _until(lambda: b.actor in b.admission.removed)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
