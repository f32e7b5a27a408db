"""pytest plugin (registered through the ``pytest11`` entry point): cluster fixtures.

* ``crdtsync_cluster``: a factory ``crdtsync_cluster(n, schema=..., seed=...)`` returning
  a :class:`~crdtsync.testing.cluster.Cluster`; every cluster it made is closed after the
  test.
* ``crdtsync_seed``: the seed to use (``--crdtsync-seed N``, default 0), so a failing
  simulation is rerun exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crdtsync")
    group.addoption("--crdtsync-seed", type=int, default=0, help="seed of crdtsync simulated clusters")


@pytest.fixture
def crdtsync_seed(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--crdtsync-seed"))


@pytest.fixture
def crdtsync_cluster(crdtsync_seed: int) -> Iterator[Callable[..., Any]]:
    from .cluster import Cluster

    made: list[Cluster] = []

    def factory(n: int = 5, *, schema: Any, seed: int | None = None, **kwargs: Any) -> Cluster:
        c = Cluster(n, schema=schema, seed=crdtsync_seed if seed is None else seed, **kwargs)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()
