"""Waiting in async tests: poll a condition (a wait, not a timing assertion)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; fail the test if it does not within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.005)
