from crdtsync import GCounter, PNCounter


def _g():
    s = GCounter()
    s = s.join(s.increment(3, actor="edge-1"))
    s = s.join(s.increment(2, actor="cloud"))
    return s.join(s.increment(1, actor="edge-1"))


def _pn():
    s = PNCounter()
    s = s.join(s.increment(10, actor="cloud"))
    return s.join(s.decrement(4, actor="edge-1"))


CASES = [
    ("gcounter/empty", GCounter),
    ("gcounter/two-actors", _g),
    ("pncounter/empty", PNCounter),
    ("pncounter/inc-dec", _pn),
]
