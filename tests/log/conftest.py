"""Fixtures for the log tests: every conformance test runs against each backend."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from crdtsync.log import LocalLog, Log, MemoryLog

from ._util import LogFactory

BACKENDS = ["memory", "local", "local-group", "kafka"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_log(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> LogFactory:
    """A factory of fresh, empty logs of the parametrized backend.

    ``local`` uses tiny segments (so rolling is exercised everywhere) and fsync "never"
    (fast); ``local-group`` uses the defaults users get; ``kafka`` is a KafkaLog of three
    partitions on a topic of its own, on the real broker of the ``crdtsync_kafka``
    fixture (the records of these tests are not crdtsync batches: no dead-lettering).
    """
    counter = iter(range(1_000_000))
    bootstrap = request.getfixturevalue("crdtsync_kafka") if backend == "kafka" else None

    async def make() -> Log:
        if backend == "memory":
            return MemoryLog()
        if backend == "kafka":
            from crdtsync.adapters.kafka import KafkaLog

            ns = f"conf-{uuid.uuid4().hex[:12]}"
            return await KafkaLog.open(bootstrap, namespace=ns, partitions=3, dead_letters=False,
                                       max_request_size=4 << 20, check_interval=60.0)
        path = tmp_path / f"log{next(counter)}"
        if backend == "local":
            return await LocalLog.open(path, fsync="never", segment_bytes=1024)
        return await LocalLog.open(path)

    return make
