"""Invariant 6: residency and write permissions hold whatever an event claims.

Hypothesis builds hostile log records: batches from arbitrary origins (an honest
replica's actor id, its ``/s`` sequenced actor, ids nobody pinned yet) claiming any
region and role in their meta (or none), holding events for resident fields
(``residency={"eu"}``), writer-restricted fields (``writers={"pricing"}``), ``SEQUENCED``
fields, a field the target only knows from the log (a peer's definition), and a field
nobody defined. Deltas are built with the real types and encoded with the real codec,
then appended raw to the :class:`MemoryLog` a target replica reads; the log may declare
a residency scope (``regions``) and the target sits in ``eu`` or ``us``.

A reference model written here, independently of the replica, decides per event:

* origin pinning: the first (region, role) a batch origin claims is pinned; a later
  batch of that origin claiming anything else is rejected whole;
* the log's scope: a batch claiming a region the log does not carry is rejected whole;
* sequenced-ness: a ``SequencedOp`` only for ``SEQUENCED`` fields, and only operations
  for them; a plain delta must have the field's type; an operation for a field the
  target does not know is rejected (a plain delta for one is kept, under its own type);
* residency: the target's region and the claimed region are in the field's residency,
  and a scoped log's regions are within it;
* writers: the claimed role is one of the field's writers.

Every delta adds one element of its own, so a field's value is exactly the set of
elements of its allowed events. Checked after a random prefix and after everything: the
target's state equals that (nothing disallowed is visible: 0 violations applied), the
rejections it counted sum to the number of disallowed events (each counted once, under
the policy reasons only), nothing was quarantined, and a later honest write (local and
remote) still applies. The honest peer's own writes go through the same model, and its
``write()`` refuses exactly the writes the model says its claim may not make.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdtsync import Feature, MemoryLog, Replica, Strong
from crdtsync.clock import make_hlc
from crdtsync.errors import PermissionDenied, ResidencyViolation
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.sequenced import SequencedOp
from crdtsync.types.collections import ORSet
from crdtsync.types.counters import GCounter

EU = frozenset({"eu"})
PRICING = frozenset({"pricing"})

# name -> (residency, writers, sequenced)
TARGET_FIELDS: dict[str, tuple[frozenset[str] | None, frozenset[str] | None, bool]] = {
    "free": (None, None, False),
    "resident": (EU, None, False),
    "priced": (None, PRICING, False),
    "guarded": (EU, PRICING, False),
    "strong": (None, None, True),
    "strong_guarded": (EU, PRICING, True),
}
# only the peer has these; the target learns them from the peer's schema events
PEER_ONLY: dict[str, tuple[frozenset[str] | None, frozenset[str] | None, bool]] = {
    "remote_guarded": (EU, PRICING, False),
    "remote_strong": (None, PRICING, True),
}
UNKNOWN = "ghost"  # nobody defines it
ALL_FIELDS = {**TARGET_FIELDS, **PEER_ONLY}
FIELD_NAMES = [*ALL_FIELDS, UNKNOWN]
KEYS = ["k1", "k2"]

POLICY_REASONS = {"identity_mismatch", "residency", "permission", "not_sequenced", "wrong_type", "unknown_field"}


def _definitions(fields: dict[str, tuple[frozenset[str] | None, frozenset[str] | None, bool]]) -> list:
    return [
        Feature(name, ORSet, residency=res, writers=wr, **({"policy": Strong()} if seq else {}))
        for name, (res, wr, seq) in fields.items()
    ]


# -- the plan hypothesis draws -------------------------------------------------------

REGIONS = ["eu", "us", "apac", "default"]
ROLES = ["pricing", "app", "default"]
# symbolic origins, resolved once the replicas exist
ORIGINS = ["peer", "peer/s", "evil~1", "evil~1/s", "evil~2"]

claims = st.one_of(
    st.tuples(st.sampled_from(REGIONS), st.sampled_from(ROLES)).map(lambda t: {"region": t[0], "role": t[1]}),
    st.sampled_from([{}, {"region": "eu"}, {"role": "pricing"}]),  # missing keys mean "default"
)
events = st.tuples(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(KEYS),
    st.sampled_from(["delta", "delta", "op", "wrong_type"]),
)
scopes = st.sampled_from([None, EU, frozenset({"us"}), frozenset({"eu", "us"})])


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    scope = draw(scopes)
    # the honest peer claims a region its log carries (else every reader drops its batches)
    peer_region = draw(st.sampled_from(sorted(scope) if scope is not None else ["eu", "us", "apac"]))
    peer_claim = {"region": peer_region, "role": draw(st.sampled_from(["pricing", "app"]))}
    # Each origin mostly repeats one claim (a spoof of the peer repeats the peer's), so most
    # batches reach the per-field checks; one in four claims something else.
    homes = {o: peer_claim if o.startswith("peer") else draw(claims) for o in ORIGINS}
    hostile = draw(st.lists(
        st.tuples(st.sampled_from(ORIGINS), st.none() | st.none() | st.none() | claims,
                  st.lists(events, min_size=1, max_size=5)),
        min_size=1, max_size=10,
    ))
    return {
        "scope": scope,
        "target_region": draw(st.sampled_from(["eu", "us"])),
        "peer_region": peer_region,
        "peer_role": peer_claim["role"],
        "hostile": [(o, homes[o] if c is None else c, evs) for o, c, evs in hostile],
        "split": draw(st.integers(min_value=0, max_value=len(hostile))),
    }


# -- the reference model -------------------------------------------------------------


@dataclass
class Model:
    """What the target must hold and count, computed without the replica's code."""

    target_region: str
    scope: frozenset[str] | None
    known: set[str]
    pins: dict[str, tuple[str, str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    disallowed: int = 0
    mismatched: int = 0

    def may_write(self, fname: str, region: str, role: str) -> bool:
        """The writer-side rule of an honest replica in (region, role) on this log."""
        res, writers, _ = ALL_FIELDS[fname]
        if writers is not None and role not in writers:
            return False
        if res is not None and (region not in res or (self.scope is not None and not self.scope <= res)):
            return False
        return True

    def allowed(self, fname: str, kind: str, region: str, role: str) -> bool:
        if fname not in self.known:
            return kind == "delta"  # kept under its own type; an operation needs a definition
        res, writers, sequenced = ALL_FIELDS[fname]
        if (kind == "op") != sequenced or kind == "wrong_type":
            return False
        if res is not None:
            if self.target_region not in res or region not in res:
                return False
            if self.scope is not None and not self.scope <= res:
                return False
        return writers is None or role in writers

    def batch(self, origin: str, meta: dict[str, str], evs: list[tuple[str, str, str, str]]) -> None:
        """One log record: (field, key, kind, element) events from ``origin`` claiming ``meta``."""
        claim = (meta.get("region", "default"), meta.get("role", "default"))
        pinned = self.pins.setdefault(origin, claim)
        if pinned != claim:
            self.disallowed += len(evs)
            self.mismatched += len(evs)
            return
        if self.scope is not None and claim[0] not in self.scope:
            self.disallowed += len(evs)
            return
        for fname, key, kind, elem in evs:
            if self.allowed(fname, kind, *claim):
                self.values.setdefault((fname, key), set()).add(elem)
            else:
                self.disallowed += 1


def _visible(replica: Replica) -> dict[tuple[str, str], set[str]]:
    """Every non-empty user value the replica holds, including fields it has no definition for."""
    out = {}
    for fname, table in replica.export_state().items():
        if fname.startswith("_"):
            continue
        for key, state in table.items():
            v = state.value()
            if v:
                out[(fname, key)] = set(v)
    return out


def _rejected(replica: Replica) -> int:
    return sum(replica.stats.events_rejected.values())


def _check(target: Replica, model: Model) -> None:
    assert _visible(target) == {k: v for k, v in model.values.items() if v}, "state is the fold of the allowed events"
    got = target.stats.events_rejected
    assert set(got) <= POLICY_REASONS, f"unexpected rejection reasons {got}"
    assert _rejected(target) == model.disallowed, f"each disallowed event counted once: {got} vs {model.disallowed}"
    assert got.get("identity_mismatch", 0) == model.mismatched
    assert target.stats.records_quarantined == 0


async def _scenario(plan: dict[str, Any]) -> None:
    scope = plan["scope"]
    log = MemoryLog(regions=scope)
    codec = MsgpackCodec()
    target = await Replica.open(schema=_definitions(TARGET_FIELDS), log=log, name="target",
                                region=plan["target_region"], role="reader", follow=False)
    peer = await Replica.open(schema=_definitions(ALL_FIELDS), log=log, name="peer",
                              region=plan["peer_region"], role=plan["peer_role"], follow=False)
    model = Model(plan["target_region"], scope, set(TARGET_FIELDS))
    peer_claim = {"region": plan["peer_region"], "role": plan["peer_role"]}
    # the peer published its whole schema on open: the target learns PEER_ONLY from it
    model.batch(peer.actor, peer_claim, [])
    model.known |= set(PEER_ONLY)
    try:
        # honest writes by the peer, refused at the writer exactly when the model says so
        written = []
        for fname, (_, _, sequenced) in ALL_FIELDS.items():
            if sequenced:
                continue
            elem = f"honest-{fname}"
            try:
                peer.write(fname, "k1", "add", elem)
            except (ResidencyViolation, PermissionDenied):
                assert not model.may_write(fname, plan["peer_region"], plan["peer_role"]), fname
            else:
                assert model.may_write(fname, plan["peer_region"], plan["peer_role"]), fname
                written.append((fname, "k1", "delta", elem))
        await peer.flush()
        if written:
            model.batch(peer.actor, peer_claim, written)
        for fname, (_, _, sequenced) in ALL_FIELDS.items():
            if not sequenced:
                continue
            elem = f"honest-{fname}"
            try:
                await peer.update(fname, "k1", "add", elem)
            except (ResidencyViolation, PermissionDenied):
                assert not model.may_write(fname, plan["peer_region"], plan["peer_role"]), fname
            else:
                assert model.may_write(fname, plan["peer_region"], plan["peer_role"]), fname
                model.batch(peer.seq_actor, peer_claim, [(fname, "k1", "op", elem)])

        # hostile records, built with the real types and codec, appended raw
        actors = {"peer": peer.actor, "peer/s": peer.seq_actor}
        next_seq = {peer.actor: peer.context.max_seq(peer.actor) + 1,
                    peer.seq_actor: peer.context.max_seq(peer.seq_actor) + 1}
        writers: dict[tuple[str, str, str], ORSet] = {}  # each origin's own view, as a real writer's
        for fname, table in peer.export_state().items():
            for key, state in table.items():
                if isinstance(state, ORSet):
                    writers[(peer.actor, fname, key)] = state
        wall = int(time.time() * 1000)
        records: list[tuple[bytes, str, dict[str, str], list[tuple[str, str, str, str]]]] = []
        n = 0
        for sym, meta, evs in plan["hostile"]:
            origin = actors.get(sym, sym)
            seq = next_seq.get(origin, 1)
            built, described = [], []
            for fname, key, kind in evs:
                n += 1
                elem = f"x{n}"
                if fname == UNKNOWN and kind == "wrong_type":
                    kind = "delta"  # an unknown field keeps the type it first got: stay an ORSet
                delta: Any
                if kind == "op":
                    delta = SequencedOp("orset", "add", (elem,))
                elif kind == "wrong_type":
                    delta = GCounter().increment(1, actor=origin)
                else:
                    mine = writers.get((origin, fname, key), ORSet())
                    delta = mine.add(elem, actor=origin)
                    writers[(origin, fname, key)] = mine.join(delta)
                built.append(Event(origin, seq, make_hlc(wall, n), fname, key, delta))
                described.append((fname, key, kind, elem))
                seq += 1
            next_seq[origin] = seq
            records.append((codec.encode(Batch.of(built, meta)), origin, meta, described))

        await target.catch_up()  # the honest part
        _check(target, model)
        split = plan["split"]
        for part in (records[:split], records[split:]):
            if not part:
                continue
            await log.append([rec for rec, *_ in part])
            for _, origin, meta, described in part:
                model.batch(origin, meta, described)
            await target.catch_up()
            _check(target, model)

        # the replica keeps running: honest writes, local and remote, still apply
        target.write("free", "k2", "add", "after-local")
        model.values.setdefault(("free", "k2"), set()).add("after-local")
        late_region = sorted(scope)[0] if scope is not None else "us"
        late = await Replica.open(schema=_definitions(TARGET_FIELDS), log=log, name="late",
                                  region=late_region, role="app", follow=False)
        try:
            late.write("free", "k2", "add", "after-remote")
            await late.flush()
        finally:
            await late.close()
        model.values[("free", "k2")].add("after-remote")
        await target.catch_up()
        _check(target, model)
    finally:
        await peer.close()
        await target.close()


# the ci profile's 200 examples run in about 12 s here (each opens three replicas)
@given(plans())
def test_no_claim_gets_a_violation_applied_and_every_rejection_is_counted(plan: dict[str, Any]) -> None:
    asyncio.run(_scenario(plan))
