"""Stopping what a Kafka log or control channel runs: its tasks, then its clients.

Shared by :class:`~crdtsync.adapters.kafka.KafkaLog` and
:class:`~crdtsync.adapters._kafka_control.KafkaControl`. Closing must finish whatever a
broker that went away does, so a task that ends in an error or a client whose ``stop``
fails is logged (``crdtsync.kafka``, at warning) and closing goes on with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_all"]

log = logging.getLogger("crdtsync.kafka")


async def stop_all(what: str, tasks: Iterable[asyncio.Task[Any] | None], clients: Iterable[Any]) -> None:
    """Cancel ``tasks`` and wait for them, then ``await client.stop()`` for each of
    ``clients`` (``None`` entries are skipped)."""
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):  # what cancel() asked for
                await task
        except Exception as exc:
            log.warning("%s: a task ended with %r while closing", what, exc)
    for client in clients:
        if client is None:
            continue
        try:
            await client.stop()
        except Exception as exc:
            log.warning("%s: stopping %s failed while closing: %r", what, type(client).__name__, exc)
