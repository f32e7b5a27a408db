from crdtsync.clock import make_hlc
from crdtsync.types.registers import LWWRegister, MaxRegister, MinRegister, MVRegister
from crdtsync.types.vectors import VectorRegister

T0 = make_hlc(1_763_000_000_000)


def _lww_scalar():
    s = LWWRegister()
    s = s.join(s.set(0.25, actor="edge-1", ts=T0))
    return s.join(s.set("v2", actor="cloud", ts=T0 + 1))


def _lww_tie():
    a = LWWRegister().set("from-a", actor="a", ts=T0)
    b = LWWRegister().set("from-b", actor="b", ts=T0)
    return a.join(b)


def _lww_container():
    return LWWRegister().set({"b": [1, b"\x00"], "a": None}, actor="edge-1", ts=T0)


def _mv_conflict():
    base = MVRegister()
    return base.join(base.set("model-v2", actor="edge-1")).join(base.set({"v": 3}, actor="cloud"))


def _mv_resolved():
    s = _mv_conflict()
    return s.join(s.set("model-v4", actor="edge-1"))


def _max():
    base = MaxRegister()
    return base.set(3, actor="a").join(base.set(7.5, actor="b")).join(base.set(-1, actor="c"))


def _max_int_tie():
    return MaxRegister().set(1.0, actor="a").join(MaxRegister().set(1, actor="b"))


def _min():
    base = MinRegister()
    return base.set(3, actor="a").join(base.set(-7.5, actor="b")).join(base.set(10, actor="c"))


def _vector():
    s = VectorRegister(dim=(4,))
    s = s.join(s.set([1.0, -0.0, float("nan"), 0.5], actor="edge-1", ts=T0))
    return s.join(s.set([0.0, 1.0, 2.0, 3.0], actor="cloud", ts=T0 + 1))


def _vector_nan():
    # NaN and -0.0 are legitimate embedding entries; their exact bits are frozen
    return VectorRegister(dim=(4,)).set([float("nan"), -0.0, 1.0, 0.5], actor="edge-1", ts=T0)


def _vector_int8():
    return VectorRegister(dtype="int8").set([[1, -2], [127, -128]], actor="edge-1", ts=T0)


CASES = [
    ("lww/empty", LWWRegister),
    ("lww/scalar", _lww_scalar),
    ("lww/actor-tie", _lww_tie),
    ("lww/container", _lww_container),
    ("mvreg/empty", MVRegister),
    ("mvreg/conflict", _mv_conflict),
    ("mvreg/resolved", _mv_resolved),
    ("maxreg/empty", MaxRegister),
    ("maxreg/mixed", _max),
    ("maxreg/int-beats-float", _max_int_tie),
    ("minreg/empty", MinRegister),
    ("minreg/mixed", _min),
    ("vector/empty", lambda: VectorRegister(dim=(4,))),
    ("vector/float32", _vector),
    ("vector/nan-and-signed-zero", _vector_nan),
    ("vector/int8-2d", _vector_int8),
]
