"""Fixtures of the part tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


class Py310TimeoutError(Exception):
    """``asyncio.TimeoutError`` as Python 3.10 has it: a class of its own, not the builtin
    ``TimeoutError`` (they are one class from 3.11 on)."""


@pytest.fixture
def py310_timeouts(monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    """Make ``asyncio.wait_for`` time out the way it does on Python 3.10.

    On 3.10, ``asyncio.wait_for`` raises ``asyncio.TimeoutError``, which the builtin
    ``TimeoutError`` does not catch; this machine runs 3.11, where the two are one class,
    so a handler written for the wrong one only fails on 3.10. The fixture gives
    ``asyncio`` a distinct ``TimeoutError`` and a ``wait_for`` that raises it, so code
    that catches ``asyncio.TimeoutError`` passes and code that catches ``TimeoutError``
    fails here as it would on 3.10.
    """
    real = asyncio.wait_for

    async def wait_for(aw: Awaitable[T], timeout: float | None, **kw: Any) -> T:
        try:
            return await real(aw, timeout, **kw)
        except TimeoutError as exc:
            raise Py310TimeoutError() from exc

    monkeypatch.setattr(asyncio, "TimeoutError", Py310TimeoutError)
    monkeypatch.setattr(asyncio, "wait_for", wait_for)
    return Py310TimeoutError
