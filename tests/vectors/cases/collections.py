from crdtsync.types.collections import ORMap, ORSet
from crdtsync.types.counters import GCounter


def _orset():
    s = ORSet()
    for e in ["gpu", 7, b"\x01", ("user", 42), None, 2.5, True]:
        s = s.join(s.add(e, actor="edge-1"))
    s = s.join(s.add("gpu", actor="cloud"))
    return s.join(s.remove(7, actor="cloud"))


def _orset_concurrent():
    a, b = ORSet(), ORSet()
    a = a.join(a.add("x", actor="a"))
    b = b.join(b.add("x", actor="b"))
    b = b.join(b.add("y", actor="b"))
    return a.join(b).join(b.remove("y", actor="b"))


def _orset_cloud():
    # a delta that arrived ahead of its predecessor leaves a dot cloud in the context
    a = ORSet()
    a = a.join(a.add("x", actor="a"))
    return ORSet().join(a.add("y", actor="a"))


def _ormap():
    m = ORMap()
    m = m.join(m.update("user:1", "increment", 5, actor="edge-1"))
    m = m.join(m.update("user:1", "decrement", 2, actor="cloud"))
    m = m.join(m.update(("user", 2), "increment", 1, actor="edge-1"))
    m = m.join(m.update("gone", "increment", 9, actor="cloud"))
    return m.join(m.remove("gone", actor="edge-1"))


def _ormap_reset():
    m = ORMap()
    m = m.join(m.update("k", "increment", 5, actor="a"))
    m = m.join(m.remove("k", actor="a"))
    return m.join(m.update("k", "increment", 2, actor="a"))


def _ormap_nested():
    m = ORMap(value_type=lambda: ORMap(value_type=GCounter))
    m = m.join(m.update("user:1", "update", "clicks", "increment", 3, ts=1 << 16, actor="edge-1"))
    m = m.join(m.update("user:1", "update", "views", "increment", 1, ts=2 << 16, actor="cloud"))
    return m.join(m.update("user:2", "update", "clicks", "increment", 1, ts=3 << 16, actor="cloud"))


def _ormap_of_sets():
    m = ORMap(value_type=ORSet)
    m = m.join(m.update("user:1", "add", "beta", actor="cloud"))
    return m.join(m.update("user:1", "add", "dark-mode", actor="edge-1"))


def _ormap_of_sets_removed():
    # version 2: the key remove leaves a removal record of what its value had seen removed;
    # version 3: the record lists its live dots under the element holding them
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="a"))
    a, b = base, base
    a = a.join(a.update("X", "remove", 0, actor="a"))
    b = b.join(b.update("X", "add", 1, actor="b"))
    a = a.join(a.remove("X", actor="a"))
    return a.join(b)


def _ormap_of_maps_removed_then_inner_removes():
    # version 3: records at both levels name the keys and elements of their live dots; an
    # element remove and an inner key remove made after the outer key remove take them
    m = ORMap(value_type=lambda: ORMap(value_type=ORSet))
    m = m.join(m.update("X", "update", "p", "add", 0, actor="c", ts=1 << 16))
    m = m.join(m.update("X", "update", "q", "add", 2, actor="d", ts=2 << 16))
    m = m.join(m.update("X", "update", "q", "add", 3, actor="d", ts=3 << 16))
    a, b = m, m
    b = b.join(b.update("X", "update", "r", "add", 1, actor="b", ts=4 << 16))
    a = a.join(a.remove("X", actor="a"))
    a = a.join(a.update("X", "update", "q", "remove", 2, actor="a", ts=5 << 16))
    a = a.join(a.update("X", "remove", "p", actor="a", ts=6 << 16))
    return a.join(b)


CASES = [
    ("orset/empty", ORSet),
    ("orset/elements", _orset),
    ("orset/concurrent", _orset_concurrent),
    ("orset/cloud", _orset_cloud),
    ("ormap/empty", ORMap),
    ("ormap/counters", _ormap),
    ("ormap/reset", _ormap_reset),
    ("ormap/nested", _ormap_nested),
    ("ormap/sets", _ormap_of_sets),
    ("ormap/sets-removed", _ormap_of_sets_removed),
    ("ormap/removes-after-key-remove", _ormap_of_maps_removed_then_inner_removes),
]
