"""The shared law suite every crdtsync type passes, reusable for your own types.

Subclass :class:`CRDTLaws` in a test module and set ``spec``::

    from crdtsync.testing import CRDTLaws, spec_for
    from crdtsync import ORSet

    class TestORSetLaws(CRDTLaws):
        spec = spec_for(ORSet)

pytest then runs, for that type: join commutative, associative (three replicas) and
idempotent; delta correctness (``x ⊔ δ(x)`` shows the value the reference model
predicts, and re-joining the delta changes nothing); convergence of five replicas under
random causal delivery with duplicates, disconnects and re-syncs, checked against the
reference model after every step; order-independence of joining all deltas in any
permutation with duplicates; encode/decode round trip; and decoder robustness (garbage,
truncations, bit flips and unknown versions raise only ``CorruptRecord`` or
``UnsupportedVersion``).

Each ``check_*`` function is usable on its own with ``hypothesis.strategies.data()``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import given, note
from hypothesis import strategies as st

from .._encoding import packb, unpackb
from ..errors import CorruptRecord, UnsupportedVersion
from ..types._base import CRDT, decode_any, registered_types
from ._sim import DeltaNetwork
from ._spec import TypeSpec

__all__ = [
    "CRDTLaws",
    "random_network",
    "check_join_laws",
    "check_delta_correctness",
    "check_convergence",
    "check_order_independence",
    "check_roundtrip",
    "check_decoder_robustness",
]


def _same(spec: TypeSpec[Any], got: Any, want: Any) -> bool:
    return bool(spec.same_value(got, want))


def random_network(
    data: st.DataObject,
    spec: TypeSpec[Any],
    *,
    replicas: int = 3,
    max_steps: int = 30,
    faults: bool = True,
    check_each_step: bool = False,
) -> DeltaNetwork:
    """Run a random history on ``replicas`` replicas of ``spec``'s type and return it."""
    net = DeltaNetwork(spec, replicas)
    steps = data.draw(st.integers(min_value=1, max_value=max_steps), label="steps")
    kinds = ["op", "op", "op", "deliver", "deliver"]
    if faults:
        kinds += ["dup", "disconnect", "reconnect"]
    for _ in range(steps):
        kind = data.draw(st.sampled_from(kinds), label="step")
        if kind == "op":
            r = data.draw(st.integers(0, replicas - 1), label="replica")
            op = data.draw(spec.ops, label="op")
            adv = data.draw(st.integers(0, spec.max_ms_step), label="advance_ms")
            refused = net.op(r, op, adv) is None
            note(f"r{r}: {op!r} (+{adv}ms)" + (" refused" if refused else ""))
        elif kind in ("deliver", "dup"):
            ready = net.deliverable()
            if not ready:
                continue
            i = data.draw(st.sampled_from(ready), label="message")
            note(f"{kind} message for r{net.inflight[i].dst} (event {net.inflight[i].event})")
            net.deliver(i, keep=(kind == "dup"))
        elif kind == "disconnect":
            r = data.draw(st.integers(0, replicas - 1), label="replica")
            note(f"disconnect r{r}")
            net.disconnect(r)
        else:
            r = data.draw(st.integers(0, replicas - 1), label="replica")
            note(f"reconnect r{r}")
            net.reconnect(r)
        if check_each_step and spec.model is not None:
            for r in range(replicas):
                got, want = net.states[r].value(), net.expected_value(r)
                assert _same(spec, got, want), f"r{r} shows {got!r}, reference model says {want!r}"
    return net


def check_join_laws(data: st.DataObject, spec: TypeSpec[Any]) -> None:
    """Commutative, associative (three replicas), idempotent, bottom is the identity."""
    net = random_network(data, spec, replicas=3)
    a, b, c = net.states
    assert a.join(b) == b.join(a), "join is not commutative"
    assert a.join(b).join(c) == a.join(b.join(c)), "join is not associative"
    assert a.join(a) == a, "join is not idempotent"
    bottom = spec.empty()
    assert a.join(bottom) == a and bottom.join(a) == a, "the empty state is not the identity"
    ab = a.join(b)
    assert ab.join(a) == ab and ab.join(b) == ab, "a join is not an upper bound of its operands"


def check_delta_correctness(data: st.DataObject, spec: TypeSpec[Any]) -> None:
    """``x ⊔ δ(x)`` is the mutation: its value follows the model; δ re-applied is a no-op."""
    net = random_network(data, spec, replicas=3)
    r = data.draw(st.integers(0, 2), label="replica")
    before = net.states[r]
    op = data.draw(spec.ops, label="op")
    delta = net.op(r, op, data.draw(st.integers(0, spec.max_ms_step)))
    after = net.states[r]
    if delta is None:  # refused (spec.rejects): nothing may have changed
        assert after is before, f"{op!r} was refused but changed the state"
        return
    assert after == before.join(delta)
    assert after.join(delta) == after, "re-joining a delta changed the state"
    assert delta.join(after) == after, "the delta is not below the state it produced"
    if spec.model is not None:
        got, want = after.value(), net.expected_value(r)
        assert _same(spec, got, want), f"after {op!r}: value {got!r}, reference model says {want!r}"


def check_convergence(data: st.DataObject, spec: TypeSpec[Any], *, replicas: int = 5, max_steps: int = 40) -> None:
    """Random causal delivery with duplicates and disconnects; converge after flush."""
    net = random_network(data, spec, replicas=replicas, max_steps=max_steps, check_each_step=True)
    net.flush()
    first = net.states[0]
    for r, s in enumerate(net.states[1:], 1):
        assert s == first, f"r{r} did not converge with r0: {s!r} vs {first!r}"
    if spec.model is not None:
        got, want = first.value(), net.expected_value()
        assert _same(spec, got, want), f"converged value {got!r}, reference model says {want!r}"


def check_order_independence(data: st.DataObject, spec: TypeSpec[Any]) -> None:
    """Joining every delta in any order, with duplicates, gives one state (invariant 2)."""
    net = random_network(data, spec, replicas=3, faults=False)
    deltas = list(net.deltas)
    if not deltas:
        return
    extra = data.draw(st.lists(st.sampled_from(deltas), max_size=len(deltas)), label="duplicates")
    shuffled = data.draw(st.permutations(deltas + extra), label="order")
    x = spec.empty()
    for d in deltas:
        x = x.join(d)
    y = spec.empty()
    for d in shuffled:
        y = y.join(d)
    assert x == y, "the order of delivery changed the state"
    net.flush()
    assert net.states[0] == x, "joining all deltas differs from the converged replica state"


def check_roundtrip(data: st.DataObject, spec: TypeSpec[Any]) -> None:
    """decode(encode(x)) == x, and the encoding is deterministic."""
    net = random_network(data, spec, replicas=2)
    for s in [*net.states, *net.deltas[:5]]:
        blob = s.encode()
        back = type(s).decode(blob)
        assert back == s, f"round trip changed the state: {s!r} -> {back!r}"
        assert back.encode() == blob, "encoding is not deterministic"
        if registered_types().get(s.TYPE_TAG) is type(s):
            assert decode_any(blob) == s
        if spec.model is not None:
            assert _same(spec, back.value(), s.value())


def check_decoder_robustness(data: st.DataObject, spec: TypeSpec[Any]) -> None:
    """Garbage, truncation, bit flips and unknown versions raise only the typed errors."""
    net = random_network(data, spec, replicas=2, max_steps=10, faults=False)
    blob = net.states[0].encode()
    cls = spec.cls
    mode = data.draw(st.sampled_from(["random", "truncate", "flip", "version", "payload"]), label="mode")
    if mode == "random":
        bad = data.draw(st.binary(max_size=64), label="bytes")
    elif mode == "truncate":
        bad = blob[: data.draw(st.integers(0, max(0, len(blob) - 1)), label="cut")]
    elif mode == "flip":
        if not blob:
            return
        ba = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            i = data.draw(st.integers(0, len(ba) - 1), label="byte")
            ba[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        bad = bytes(ba)
    elif mode == "version":
        env = unpackb(blob)
        env[1] = cls.VERSION + data.draw(st.integers(1, 1000), label="ahead")
        bad = packb(env)
        try:
            cls.decode(bad)
        except UnsupportedVersion:
            return
        raise AssertionError("a newer format version was accepted")
    else:
        env = unpackb(blob)
        env[2] = data.draw(_junk, label="payload")
        bad = packb(env)
    decoders = [cls.decode]
    if registered_types().get(cls.TYPE_TAG) is cls:
        decoders.append(decode_any)
    for decoder in decoders:
        try:
            s = decoder(bad)
        except (CorruptRecord, UnsupportedVersion):
            continue
        # bytes that decode must give a usable state
        assert isinstance(s, CRDT)
        s.value()
        s.join(s)
        s.encode()


_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


_LAWS = {
    "test_join_laws": check_join_laws,
    "test_delta_correctness": check_delta_correctness,
    "test_convergence": check_convergence,
    "test_order_independence": check_order_independence,
    "test_roundtrip": check_roundtrip,
    "test_decoder_robustness": check_decoder_robustness,
}


def _make_law(check: Any) -> Any:
    @given(st.data())
    def law(self: CRDTLaws, data: st.DataObject) -> None:
        check(data, self.spec)

    law.__doc__ = check.__doc__
    return law


class CRDTLaws:
    """Base class: set ``spec`` and pytest runs the whole law suite on that type.

    Each subclass gets its own test functions (hypothesis keeps one example database
    entry per test function, so sharing them between types would mix their examples).
    """

    spec: ClassVar[TypeSpec[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, check in _LAWS.items():
            if name not in cls.__dict__:
                law = _make_law(check)
                law.__name__ = law.__qualname__ = name
                setattr(cls, name, law)
