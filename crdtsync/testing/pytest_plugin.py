"""pytest plugin (registered through the ``pytest11`` entry point): cluster fixtures.

* ``crdtsync_cluster``: a factory ``crdtsync_cluster(n, schema=..., seed=...)`` returning
  a :class:`~crdtsync.testing.cluster.Cluster`; every cluster it made is closed after the
  test.
* ``crdtsync_seed``: the seed to use (``--crdtsync-seed N``, default 0), so a failing
  simulation is rerun exactly.
* ``crdtsync_kafka``: the ``host:port`` of a real Kafka-protocol broker shared by the tests
  of one session (one per xdist worker): ``CRDTSYNC_KAFKA_BOOTSTRAP`` when set, otherwise a
  tansu broker started on a free loopback port (:class:`~crdtsync.testing.kafka.TansuBroker`)
  and killed at the end. Tests must use topic names of their own.
* ``crdtsync_tansu``: a :class:`~crdtsync.testing.kafka.TansuBroker` of the test's own
  (always tansu, whatever ``CRDTSYNC_KAFKA_BOOTSTRAP`` says), for tests that kill, pause or
  restart the broker. Killed at teardown.

A missing broker binary fails these fixtures with a message saying what to install; they
never skip. The broker's output is attached to the report of a failing test.
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


@pytest.fixture(scope="session")
def crdtsync_kafka(request: pytest.FixtureRequest) -> Iterator[str]:
    import os

    from .kafka import BOOTSTRAP_ENV, TansuBroker, wait_ready

    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        wait_ready(external)
        yield external
        return
    broker = TansuBroker()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def crdtsync_tansu(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    from .kafka import TansuBroker

    broker = TansuBroker(log_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        request.node.add_report_section("teardown", "tansu broker", broker.output())
