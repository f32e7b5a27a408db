"""Helpers shared by the log tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from crdtsync.log import Log

T = TypeVar("T")

#: Upper bound for one async test body; a hang fails the test instead of the run.
TEST_TIMEOUT = 60.0

LogFactory = Callable[[], Awaitable[Log]]


def arun(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """Run ``coro`` on a fresh event loop (the repo does not depend on pytest-asyncio)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
