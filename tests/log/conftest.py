"""Fixtures for the log tests: every conformance test runs against each backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync.log import LocalLog, Log, MemoryLog

from ._util import LogFactory

BACKENDS = ["memory", "local", "local-group"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_log(backend: str, tmp_path: Path) -> LogFactory:
    """A factory of fresh, empty logs of the parametrized backend.

    ``local`` uses tiny segments (so rolling is exercised everywhere) and fsync "never"
    (fast); ``local-group`` uses the defaults users get.
    """
    counter = iter(range(1_000_000))

    async def make() -> Log:
        if backend == "memory":
            return MemoryLog()
        path = tmp_path / f"log{next(counter)}"
        if backend == "local":
            return await LocalLog.open(path, fsync="never", segment_bytes=1024)
        return await LocalLog.open(path)

    return make
