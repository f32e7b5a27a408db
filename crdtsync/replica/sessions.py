"""Per-call level overrides (:meth:`Replica.at`) and sessions (:meth:`Replica.session`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import Context
from ..events import Event
from ..policy import SESSION, ReadLevel, WriteLevel

if TYPE_CHECKING:
    from .facade import Replica

__all__ = ["Leveled", "Session"]


class Leveled:
    """A replica seen through stronger levels (see :meth:`Replica.at`)."""

    def __init__(self, replica: Replica, write: WriteLevel | None, read: ReadLevel | None,
                 timeout: float | None) -> None:
        self.replica = replica
        self.write = write
        self.read_level = read
        self.timeout = timeout

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        return await self.replica.levels.update(field_name, key, op, args, kwargs, self.write, self.timeout)

    async def read(self, field_name: str, key: str) -> Any:
        return await self.replica.read(field_name, key, level=self.read_level, timeout=self.timeout)


class Session:
    """Read-your-writes and monotonic reads across calls (and replicas).

    ``token`` is a :class:`~crdtsync.clock.Context`: everything the session wrote or
    read so far. Reads through the session wait until the replica includes it
    (``SESSION(token)``), or raise ``StaleRead`` after the field's timeout. Hand the
    token to a session on another replica to carry the guarantee over.
    """

    def __init__(self, replica: Replica, token: Context) -> None:
        self.replica = replica
        self.token = token

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        ev = await self.replica.update(field_name, key, op, *args, **kwargs)
        self.token = self.token.add(ev.dot)
        return ev

    async def read(self, field_name: str, key: str, *, timeout: float | None = None) -> Any:
        value = await self.replica.read(field_name, key, level=SESSION(self.token), timeout=timeout)
        self.token = self.token.join(self.replica.context)
        return value
