from crdtsync.types.bounded import BoundedCounter


def _spent() -> BoundedCounter:
    s = BoundedCounter()
    s = s.join(s.increment(10, actor="cloud"))
    s = s.join(s.increment(3, actor="edge-1"))
    return s.join(s.decrement(4, actor="cloud"))


def _transferred() -> BoundedCounter:
    cloud = BoundedCounter()
    cloud = cloud.join(cloud.increment(10, actor="cloud"))
    cloud = cloud.join(cloud.transfer(6, "edge-1", actor="cloud"))
    edge = BoundedCounter().join(cloud)
    edge = edge.join(edge.transfer(2, "edge-2", actor="edge-1"))
    return edge.join(edge.decrement(3, actor="edge-1"))


def _spend_delta() -> BoundedCounter:
    """A decrement delta carries the transfers that justify it."""
    s = BoundedCounter()
    s = s.join(s.increment(5, actor="cloud"))
    s = s.join(s.increment(7, actor="other"))
    s = s.join(s.transfer(5, "edge-1", actor="cloud"))
    return s.decrement(2, actor="edge-1")


def _lower() -> BoundedCounter:
    s = BoundedCounter(lower=-5)
    s = s.join(s.increment(2, actor="cloud"))
    return s.join(s.decrement(1, actor="cloud"))


CASES = [
    ("bcounter/empty", BoundedCounter),
    ("bcounter/spent", _spent),
    ("bcounter/transferred", _transferred),
    ("bcounter/spend-delta", _spend_delta),
    ("bcounter/lower", _lower),
]
