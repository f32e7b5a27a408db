"""Example-based tests of the registers and VectorRegister: what a user relies on."""

from __future__ import annotations

import enum
import math
import sys
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync._encoding import packb
from crdtsync.clock import HLC, Context, Dot, make_hlc
from crdtsync.errors import CorruptRecord, IncompatibleState, UnsupportedVersion
from crdtsync.types import decode_any
from crdtsync.types.registers import LWWRegister, MaxRegister, MinRegister, MVRegister

T0 = make_hlc(1_763_000_000_000)


def _decode(tag, payload, version=1):
    return decode_any(packb([tag, version, payload]))


# -- LWWRegister -----------------------------------------------------------------------


class TestLWWRegister:
    def test_starts_unset(self):
        r = LWWRegister()
        assert r.value() is None
        assert r.timestamp is None and r.writer is None

    def test_later_timestamp_wins_in_any_delivery_order(self):
        base = LWWRegister()
        edge = base.set("v1", actor="edge-1", ts=T0 + 5)
        cloud = base.set("v2", actor="cloud", ts=T0 + 9)
        for merged in (edge.join(cloud), cloud.join(edge)):
            assert merged.value() == "v2"
            assert merged.writer == "cloud"
            assert merged.timestamp == T0 + 9

    def test_equal_timestamps_go_to_the_higher_actor_id(self):
        base = LWWRegister()
        a = base.set("from-a", actor="replica-a", ts=T0)
        b = base.set("from-b", actor="replica-b", ts=T0)
        assert a.join(b).value() == "from-b"
        assert b.join(a).value() == "from-b"

    def test_identical_ts_and_actor_fall_back_to_value_bytes(self):
        # a broken clock reusing a stamp must not make join order-dependent
        x = LWWRegister().set(1, actor="r", ts=T0)
        y = LWWRegister().set("one", actor="r", ts=T0)
        assert x.join(y) == y.join(x)
        assert x.join(y).value() == "one"  # packb("one") > packb(1)

    def test_older_write_loses_to_the_current_value(self):
        s = LWWRegister().set("new", actor="a", ts=T0 + 10)
        s = s.join(s.set("stale", actor="b", ts=T0))
        assert s.value() == "new"

    def test_join_returns_an_operand_unchanged(self):
        a = LWWRegister().set(1.5, actor="a", ts=T0)
        b = LWWRegister().set(2.5, actor="b", ts=T0 + 1)
        assert a.join(b) is b and b.join(a) is b and a.join(a) is a

    def test_default_ts_comes_from_the_process_clock(self):
        s = LWWRegister()
        s = s.join(s.set("first", actor="a"))
        s = s.join(s.set("second", actor="a"))
        assert s.value() == "second"
        assert isinstance(s.timestamp, int)

    def test_hlc_stamps_order_writes(self):
        clock = HLC(clock=lambda: 1_000)
        s = LWWRegister()
        for v in ("a", "b", "c"):
            s = s.join(s.set(v, actor="edge", ts=clock.now()))
        assert s.value() == "c"

    @pytest.mark.parametrize(
        "value",
        [None, True, 0, -(2**63), 2**64 - 1, 1.5, float("inf"), "text", b"\x00\xff", [1, [2]],
         {"b": 1, "a": {"x": None}}],
    )
    def test_json_like_values_round_trip(self, value):
        s = LWWRegister().set(value, actor="a", ts=T0)
        back = LWWRegister.decode(s.encode())
        assert back == s
        assert back.value() == value
        assert type(back.value()) is type(value)

    def test_nan_value_equals_itself(self):
        s = LWWRegister().set(float("nan"), actor="a", ts=T0)
        assert s == LWWRegister.decode(s.encode())
        assert math.isnan(s.value())

    def test_one_and_true_and_float_one_are_different_values(self):
        states = [LWWRegister().set(v, actor="a", ts=T0) for v in (1, 1.0, True)]
        assert states[0] != states[1] and states[0] != states[2] and states[1] != states[2]
        assert [type(s.value()) for s in states] == [int, float, bool]

    def test_tuple_becomes_list_and_dict_keys_are_canonical(self):
        s = LWWRegister().set({"b": (1, 2), "a": 0}, actor="a", ts=T0)
        assert s.value() == {"a": 0, "b": [1, 2]}
        assert list(s.value()) == ["a", "b"]
        t = LWWRegister().set({"a": 0, "b": [1, 2]}, actor="a", ts=T0)
        assert s.encode() == t.encode()

    def test_state_cannot_be_changed_through_values(self):
        payload = {"items": [1, 2]}
        s = LWWRegister().set(payload, actor="a", ts=T0)
        payload["items"].append(3)
        got = s.value()
        got["items"].append(4)
        assert s.value() == {"items": [1, 2]}

    def test_enum_values_are_stored_as_plain_values(self):
        class Color(enum.IntEnum):
            RED = 1

        s = LWWRegister().set(Color.RED, actor="a", ts=T0)
        assert type(s.value()) is int
        assert LWWRegister.decode(s.encode()) == s

    def test_actor_ids_are_shared_between_states(self):
        actor = "edge-" + str(40 + 2)  # built at run time: a fresh string object
        a = LWWRegister().set(1, actor=actor, ts=T0)
        b = LWWRegister().set(2, actor="edge-42", ts=T0)
        assert a.writer is b.writer

    def test_no_instance_dict(self):
        s = LWWRegister().set(1, actor="a", ts=T0)
        assert not hasattr(s, "__dict__")
        assert len(LWWRegister.__slots__) == 3

    def test_memory_per_key_for_100k_scalar_registers(self):
        # the budget from the design: a feature with 100k keys of one LWWRegister holding a
        # float at a real HLC time stays near 150 bytes per key (register + ts + value)
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            base = LWWRegister()
            regs = [base.set(i + 0.5, actor="edge-replica-01", ts=T0 + i) for i in range(100_000)]
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        per_key = (after - before - sys.getsizeof(regs)) / len(regs)
        assert per_key <= 150, per_key

    @pytest.mark.parametrize(
        "value,exc,match",
        [
            (object(), TypeError, "cannot be stored"),
            ({1, 2}, TypeError, "cannot be stored"),
            ([object()], TypeError, "cannot be stored"),
            ({(1, 2): "x"}, TypeError, "dict keys"),
            ({1.5: "x"}, TypeError, "dict keys"),
            (2**64, ValueError, "64 bits"),
            ([2**64], TypeError, "64 bits"),
        ],
    )
    def test_bad_values_are_rejected(self, value, exc, match):
        with pytest.raises(exc, match=match):
            LWWRegister().set(value, actor="a", ts=T0)

    @pytest.mark.parametrize(
        "kwargs,exc,match",
        [
            ({"actor": "", "ts": T0}, TypeError, "actor"),
            ({"actor": 7, "ts": T0}, TypeError, "actor"),
            ({"actor": "a", "ts": -1}, ValueError, "ts"),
            ({"actor": "a", "ts": 2**64}, ValueError, "ts"),
            ({"actor": "a", "ts": 1.5}, TypeError, "ts"),
            ({"actor": "a", "ts": True}, TypeError, "ts"),
        ],
    )
    def test_bad_arguments_are_rejected(self, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            LWWRegister().set("v", **kwargs)

    def test_join_with_another_type_is_refused(self):
        with pytest.raises(IncompatibleState):
            LWWRegister().join(MVRegister())  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "payload",
        [
            [1, "a"],
            [-1, "a", 1],
            [1, "", 1],
            [1, 7, 1],
            [True, "a", 1],
            [1, "a", {"b": 1, "a": 2}],  # dict keys out of canonical order
            {"ts": 1},
            None,
        ],
    )
    def test_malformed_payloads_are_corrupt(self, payload):
        with pytest.raises(CorruptRecord):
            _decode("lww", payload)

    def test_newer_version_is_unsupported(self):
        with pytest.raises(UnsupportedVersion):
            _decode("lww", [], version=2)


# -- MVRegister ------------------------------------------------------------------------


class TestMVRegister:
    def test_starts_empty(self):
        r = MVRegister()
        assert r.value() == () and not r.conflict

    def test_concurrent_writes_are_kept_as_a_conflict(self):
        base = MVRegister()
        edge = base.join(base.set("model-v2", actor="edge"))
        cloud = base.join(base.set("model-v3", actor="cloud"))
        merged = edge.join(cloud)
        assert merged == cloud.join(edge)
        assert merged.value() == ("model-v2", "model-v3")
        assert merged.conflict
        assert {d.replica for d in merged.entries} == {"edge", "cloud"}

    def test_a_write_resolves_the_conflict_it_has_seen(self):
        base = MVRegister()
        merged = base.set("x", actor="a").join(base.set("y", actor="b"))
        fix = merged.set("xy", actor="c")
        resolved = merged.join(fix)
        assert resolved.value() == ("xy",) and not resolved.conflict
        # the resolving delta alone clears the value at a replica that had one side
        only_a = base.join(base.set("x", actor="a"))
        assert only_a.join(fix).value() == ("xy",)

    def test_a_write_does_not_remove_values_it_has_not_seen(self):
        base = MVRegister()
        a1 = base.join(base.set(1, actor="a"))
        b1 = base.set(2, actor="b")  # concurrent with everything a does
        a2 = a1.join(a1.set(3, actor="a"))
        assert a2.join(b1).value() == (2, 3)

    def test_sequential_writes_leave_one_value_and_a_compact_context(self):
        s = MVRegister()
        for i in range(5):
            s = s.join(s.set(i, actor="a"))
        assert s.value() == (4,)
        assert s.context == Context({"a": 5})
        assert len(s.entries) == 1

    def test_the_delta_carries_the_new_dot_and_the_overwritten_ones(self):
        s = MVRegister().set("x", actor="a").join(MVRegister().set("y", actor="b"))
        d = s.set("z", actor="a")
        assert dict(d.entries) == {Dot("a", 2): "z"}
        assert set(d.context.dots()) == {Dot("a", 1), Dot("a", 2), Dot("b", 1)}

    def test_equal_concurrent_values_are_not_a_conflict(self):
        base = MVRegister()
        merged = base.set("same", actor="a").join(base.set("same", actor="b"))
        assert merged.value() == ("same",)
        assert not merged.conflict
        assert len(merged.entries) == 2

    def test_values_are_ordered_by_canonical_bytes(self):
        base = MVRegister()
        s = base.set("b", actor="x").join(base.set(1, actor="y")).join(base.set(1.0, actor="z"))
        # msgpack bytes: 1 is 0x01, "b" is 0xa1 0x62, 1.0 is 0xcb ...
        assert s.value() == (1, "b", 1.0)
        assert [type(v) for v in s.value()] == [int, str, float]

    def test_round_trip_keeps_the_conflict(self):
        base = MVRegister()
        s = base.set({"k": [1]}, actor="a").join(base.set(None, actor="b"))
        back = MVRegister.decode(s.encode())
        assert back == s and back.value() == ({"k": [1]}, None)

    def test_bad_arguments_are_rejected(self):
        with pytest.raises(TypeError, match="actor"):
            MVRegister().set(1, actor="")
        with pytest.raises(TypeError, match="cannot be stored"):
            MVRegister().set(object(), actor="a")

    @pytest.mark.parametrize(
        "payload",
        [
            [[["a", 1, "x"]], []],  # live dot missing from the context
            [[["a", 2, "x"], ["a", 1, "y"]], [["a", 2, []]]],  # not sorted
            [[["a", 1, "x"], ["a", 1, "x"]], [["a", 1, []]]],  # duplicate
            [[["a", 0, "x"]], [["a", 1, []]]],
            [[["a", 1]], [["a", 1, []]]],
            [[], [["a", -1, []]]],
            [[]],
            "x",
        ],
    )
    def test_malformed_payloads_are_corrupt(self, payload):
        with pytest.raises(CorruptRecord):
            _decode("mvreg", payload)


# -- Max / Min -------------------------------------------------------------------------


class TestMaxMinRegisters:
    def test_max_keeps_the_largest_ever_set(self):
        base = MaxRegister()
        s = base.set(3, actor="a").join(base.set(10, actor="b")).join(base.set(7.5, actor="c"))
        assert s.value() == 10
        assert s.join(s.set(2, actor="a")).value() == 10

    def test_min_keeps_the_smallest_ever_set(self):
        base = MinRegister()
        s = base.set(3, actor="a").join(base.set(-10, actor="b")).join(base.set(7.5, actor="c"))
        assert s.value() == -10

    def test_start_unset(self):
        assert MaxRegister().value() is None and MinRegister().value() is None

    @pytest.mark.parametrize("cls", [MaxRegister, MinRegister])
    def test_an_int_beats_an_equal_float(self, cls):
        i = cls().set(1, actor="a")
        f = cls().set(1.0, actor="b")
        assert type(i.join(f).value()) is int and type(f.join(i).value()) is int

    def test_signed_zeros_follow_the_ieee_total_order(self):
        pos, neg = 0.0, -0.0
        mx = MaxRegister().set(neg, actor="a").join(MaxRegister().set(pos, actor="b"))
        mn = MinRegister().set(pos, actor="a").join(MinRegister().set(neg, actor="b"))
        assert math.copysign(1, mx.value()) == 1
        assert math.copysign(1, mn.value()) == -1

    def test_large_ints_compare_exactly_with_floats(self):
        s = MaxRegister().set(float(2**53), actor="a").join(MaxRegister().set(2**53 + 1, actor="b"))
        assert s.value() == 2**53 + 1

    @pytest.mark.parametrize("cls", [MaxRegister, MinRegister])
    @pytest.mark.parametrize(
        "value,exc",
        [(float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),
         (True, TypeError), ("3", TypeError), (None, TypeError), (2**64, ValueError)],
    )
    def test_bad_values_are_rejected(self, cls, value, exc):
        with pytest.raises(exc):
            cls().set(value, actor="a")

    def test_max_and_min_do_not_join(self):
        with pytest.raises(IncompatibleState):
            MaxRegister().join(MinRegister())  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [None, 0, -3, 2.5, -0.0, 2**64 - 1])
    def test_round_trip(self, value):
        s = MaxRegister() if value is None else MaxRegister().set(value, actor="a")
        back = MaxRegister.decode(s.encode())
        assert back == s and type(back.value()) is type(s.value())

    @pytest.mark.parametrize("payload", [float("nan"), float("inf"), True, "1", [1]])
    def test_malformed_payloads_are_corrupt(self, payload):
        with pytest.raises(CorruptRecord):
            _decode("maxreg", payload)
        with pytest.raises(CorruptRecord):
            _decode("minreg", payload)


# -- VectorRegister --------------------------------------------------------------------


class TestVectorRegister:
    @pytest.fixture(autouse=True)
    def _np(self):
        self.np = pytest.importorskip("numpy")

    def _reg(self, **kw):
        from crdtsync.types.vectors import VectorRegister

        return VectorRegister(**kw)

    def test_starts_unset_with_params(self):
        r = self._reg(dim=4)
        assert r.value() is None and r.timestamp is None and r.shape is None
        assert dict(r.params()) == {"dim": (4,), "dtype": "float32"}

    def test_later_write_wins_and_value_is_read_only(self):
        np = self.np
        base = self._reg(dim=(3,))
        old = base.set(np.array([1, 2, 3], dtype=np.float32), actor="edge", ts=T0)
        new = base.set([0.5, 0.25, 0.125], actor="cloud", ts=T0 + 1)
        for merged in (old.join(new), new.join(old)):
            v = merged.value()
            assert v.dtype == np.float32 and v.shape == (3,)
            assert v.tolist() == [0.5, 0.25, 0.125]
            assert not v.flags.writeable
            assert merged.writer == "cloud"

    def test_equal_timestamps_go_to_the_higher_actor_id(self):
        base = self._reg(dim=2)
        a = base.set([1, 1], actor="a", ts=T0)
        b = base.set([2, 2], actor="b", ts=T0)
        assert a.join(b) is b and b.join(a) is b

    def test_identical_ts_and_actor_fall_back_to_bytes(self):
        base = self._reg(dim=2)
        x = base.set([1, 2], actor="a", ts=T0)
        y = base.set([3, 4], actor="a", ts=T0)
        assert x.join(y) == y.join(x)

    def test_the_stored_array_is_a_copy(self):
        np = self.np
        arr = np.zeros(4, dtype=np.float32)
        s = self._reg(dim=4).set(arr, actor="a", ts=T0)
        arr[0] = 9
        assert s.value()[0] == 0

    def test_nan_and_signed_zero_survive_and_compare_by_bytes(self):
        np = self.np
        s = self._reg(dim=2).set([float("nan"), -0.0], actor="a", ts=T0)
        back = decode_any(s.encode())
        assert back == s
        assert np.isnan(back.value()[0]) and math.copysign(1, back.value()[1]) == -1
        z = self._reg(dim=2).set([float("nan"), 0.0], actor="a", ts=T0)
        assert z != s

    def test_round_trip_other_dtypes_and_shapes(self):
        np = self.np
        for dtype, arr in [("int8", np.array([[1, -2], [3, 4]], dtype=np.int8)),
                           ("float64", np.arange(6.0).reshape(2, 3)),
                           ("complex64", np.array([1 + 2j])),
                           ("uint16", np.array([65535]))]:
            s = self._reg(dtype=dtype).set(arr, actor="a", ts=T0)
            back = decode_any(s.encode())
            assert back == s
            assert back.value().dtype == np.dtype(dtype)
            assert np.array_equal(back.value(), arr)

    def test_encoding_is_little_endian_whatever_the_input_order(self):
        np = self.np
        big = np.array([1.0, 2.0], dtype=">f4")
        s = self._reg(dim=2).set(big, actor="a", ts=T0)
        assert s.to_bytes() == np.array([1.0, 2.0], dtype="<f4").tobytes()

    def test_wrong_shape_is_rejected(self):
        with pytest.raises(ValueError, match="shape"):
            self._reg(dim=4).set([1, 2, 3], actor="a", ts=T0)

    def test_different_params_do_not_join(self):
        a = self._reg(dim=4)
        with pytest.raises(IncompatibleState):
            a.join(self._reg(dim=3))
        with pytest.raises(IncompatibleState):
            a.join(self._reg(dim=4, dtype="float64"))

    @pytest.mark.parametrize(
        "kwargs,value,exc,match",
        [
            ({"dtype": "int8"}, [1.5], TypeError, "float64"),
            ({"dtype": "int8"}, [300], ValueError, "fit"),
            ({"dtype": "uint8"}, [-1], ValueError, "fit"),
            ({}, [1e300], ValueError, "overflow"),
            ({}, ["a"], TypeError, "numbers"),
            ({}, [True], TypeError, "numbers"),
            ({}, [[1], [2, 3]], TypeError, "numbers"),
        ],
    )
    def test_bad_arrays_are_rejected(self, kwargs, value, exc, match):
        with pytest.raises(exc, match=match):
            self._reg(**kwargs).set(value, actor="a", ts=T0)

    @pytest.mark.parametrize(
        "kwargs,exc",
        [({"dtype": "bool"}, ValueError), ({"dtype": "float128"}, ValueError),
         ({"dtype": "not-a-dtype"}, TypeError), ({"dim": "4"}, TypeError), ({"dim": (-1,)}, ValueError),
         ({"dim": 1.5}, TypeError)],
    )
    def test_bad_params_are_rejected(self, kwargs, exc):
        with pytest.raises(exc):
            self._reg(**kwargs)

    @pytest.mark.parametrize(
        "payload",
        [
            ["float32", [2], [1, "a", [2], b"\x00" * 4]],  # too few bytes
            ["float32", [2], [1, "a", [3], b"\x00" * 12]],  # shape differs from dim
            ["bool", None, []],
            ["float32", [-1], []],
            ["float32", None, [1, "a", [2**40, 2**40], b""]],
            ["float32", None, [1, "a", [0, 2**40], b""]],
            ["float32", None, [1, "a", [2], "text"]],
            ["float32", None, [1, "", [1], b"\x00" * 4]],
            ["float32", None, [1, "a", [True], b"\x00" * 4]],
            ["float32", None],
        ],
    )
    def test_malformed_payloads_are_corrupt(self, payload):
        with pytest.raises(CorruptRecord):
            _decode("vector", payload)

    def test_zero_size_arrays_decode_to_usable_states(self):
        s = _decode("vector", ["float32", None, [1, "a", [0, 2**20], b""]])
        assert s.value().shape == (0, 2**20)


def test_vectors_work_without_numpy_except_set_and_value():
    import subprocess

    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import crdtsync\n"
        "from crdtsync.types.vectors import VectorRegister\n"
        "from crdtsync.types import decode_any\n"
        "from crdtsync._encoding import packb\n"
        "s = decode_any(packb(['vector', 1, ['float32', [1], [5, 'a', [1], b'\\0\\0\\x80?']]]))\n"
        "assert s.join(VectorRegister(dim=1)) is s and s.encode()\n"
        "for call in (lambda: s.value(), lambda: s.set([1.0], actor='a', ts=1)):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as e:\n"
        "        assert \"pip install 'crdtsync[vectors]'\" in str(e), e\n"
        "    else:\n"
        "        raise SystemExit('no ImportError')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_flat_list_values_take_the_fast_path_and_store_the_same_bytes() -> None:
    """A list of plain scalars is stored as its msgpack bytes without the canonicalising
    walk; the bytes (and so tie-breaks and digests) equal the general path's, and the
    64-bit bound is still enforced, for values written locally and read off the wire."""
    from crdtsync._encoding import canonical, packb
    from crdtsync.errors import CorruptRecord
    from crdtsync.types.registers import _flat, store_value, stored_from_wire

    for v in ([1.5, "x"], (1, 2, None, True, b"q"), [], [2**64 - 1], [-(2**63)], [float("nan"), ""]):
        assert _flat(v)
        stored = store_value(v)
        assert bytes(stored) == packb(canonical(v))
        assert stored_from_wire(canonical(v), "v") == stored
    for nested in ([1, [2]], [{"a": 1}], [2**64]):
        assert not _flat(nested)
    with pytest.raises((ValueError, TypeError), match="64 bits"):
        store_value([1, 2**64])
    with pytest.raises((CorruptRecord, TypeError), match="64 bits"):
        stored_from_wire([-(2**63) - 1], "v")
    r = LWWRegister().set([3, "a"], actor="a", ts=5)
    assert r.value() == [3, "a"] and r.value() is not r.value()  # a fresh copy per read


_WIRE_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**65),
                          st.floats(allow_nan=True), st.text(max_size=4), st.binary(max_size=4))
_WIRE_VALUES = st.recursive(st.lists(_WIRE_SCALARS, max_size=4),
                            lambda inner: st.lists(st.one_of(_WIRE_SCALARS, inner), max_size=3), max_leaves=8)


@given(st.lists(_WIRE_VALUES, min_size=1, max_size=12))
def test_a_column_of_list_values_is_stored_as_each_value_alone_would_be(values) -> None:
    """The column path (a whole column of flat lists at once, as a format-2 record of
    ``[score, label]`` values arrives) gives exactly the stored values, and exactly the
    errors, of :func:`stored_from_wire` one value at a time."""
    from crdtsync.types.registers import _Packed, _stored_column, stored_from_wire

    try:
        one_by_one = [stored_from_wire(v, "lww.value") for v in values]
    except (CorruptRecord, TypeError) as exc:
        with pytest.raises(type(exc)):
            _stored_column(values)
        return
    column = _stored_column(values)
    assert column is not None
    assert [type(x) for x in column] == [type(x) for x in one_by_one]
    assert all(type(x) is _Packed for x in column)
    assert [bytes(x) for x in column] == [bytes(x) for x in one_by_one]
