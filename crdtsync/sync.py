"""A thread-backed synchronous facade over the async :class:`~crdtsync.replica.Replica`.

For WSGI apps, scripts and notebooks: one implementation (the async replica) runs on a
private event loop in a daemon thread (uvloop when installed); every method here submits
a coroutine to it and waits. Reads of immutable state are served without a round trip.

Fork safety: a process forked while a ``SyncReplica`` is open (gunicorn ``--preload``)
inherits a copy whose loop thread does not exist in the child. The first call in the
child re-opens a working replica: a **new incarnation** (the child must never emit dots
the parent also emits) with its own data directory under ``<data>/workers/``, on the
same log (LocalLog is multi-process safe), rebuilt by replaying that log.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ._loop import new_event_loop as _new_loop
from .clock import Context
from .events import Event
from .policy import ReadLevel
from .replica import Change, Replica, View

__all__ = ["SyncReplica"]

T = TypeVar("T")

_live: weakref.WeakSet[SyncReplica] = weakref.WeakSet()


class SyncReplica:
    """Blocking API over a :class:`Replica` running on a background event loop.

    ``SyncReplica.open(...)`` takes the same arguments as :meth:`Replica.open`.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, open_kwargs: dict[str, Any]) -> None:
        self._open_kwargs = open_kwargs
        self._pid = os.getpid()
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crdtsync-replica", daemon=True)
        self._thread.start()
        self._replica: Replica = self._call(_open_replica(open_kwargs))
        _live.add(self)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> SyncReplica:
        return cls({"data_dir": data_dir, **kwargs})

    # -- plumbing ----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncReplica methods cannot be called from its own loop; use the async Replica")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _ensure(self) -> Replica:
        if os.getpid() != self._pid:
            self._reopen_after_fork()
        return self._replica

    def _reopen_after_fork(self) -> None:
        inherited = self._replica
        self._pid = os.getpid()
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crdtsync-replica", daemon=True)
        self._thread.start()
        kwargs = dict(self._open_kwargs)
        parent_dir = kwargs.get("data_dir")
        name = f"{inherited.identity.name}.w{self._pid}"
        if parent_dir is not None:
            kwargs["data_dir"] = Path(parent_dir) / "workers" / name
            if kwargs.get("log") is None:
                kwargs["log"] = self._call(_open_local_log(Path(parent_dir) / "log", kwargs.get("fsync", "group")))
        kwargs["name"] = name
        kwargs.setdefault("region", inherited.identity.region)
        kwargs.setdefault("role", inherited.identity.role)
        # the worker replays the shared log (its own directory starts empty)
        replica: Replica = self._call(_open_replica(kwargs))
        replica.owns_log = True
        self._replica = replica

    # -- API -----------------------------------------------------------------------
    @property
    def replica(self) -> Replica:
        """The async replica underneath (use it only from its loop)."""
        return self._ensure()

    @property
    def actor(self) -> str:
        return self._ensure().actor

    def update(self, field: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        r = self._ensure()
        return self._call(r.update(field, key, op, *args, **kwargs))

    def write(self, field: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        r = self._ensure()

        async def run() -> Event:
            return r.write(field, key, op, *args, **kwargs)

        return self._call(run())

    def read(self, field: str, key: str, *, level: ReadLevel | None = None, timeout: float | None = None) -> Any:
        """Read at the field's read level (or a stronger ``level``); see :meth:`Replica.read`."""
        r = self._ensure()
        return self._call(r.read(field, key, level=level, timeout=timeout))

    def compare_and_set(self, field: str, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        r = self._ensure()
        return self._call(r.compare_and_set(field, key, expected, new, timeout=timeout))

    def decrement_if_enough(self, field: str, key: str, n: int = 1, *, timeout: float | None = None) -> bool:
        r = self._ensure()
        return self._call(r.decrement_if_enough(field, key, n, timeout=timeout))

    def flush(self) -> None:
        r = self._ensure()
        self._call(r.flush())

    def value(self, field: str, key: str) -> Any:
        return self._ensure().value(field, key)

    def view(self, key: str, fields: Iterable[str]) -> View:
        return self._ensure().view(key, fields)

    @property
    def context(self) -> Context:
        return self._ensure().context

    def sync(self, timeout: float | None = 30) -> None:
        """Flush and wait until everything in the log now has been applied."""
        r = self._ensure()
        self._call(r.sync(timeout=timeout))

    def subscribe(self, callback: Callable[[Change], Any], fields: Iterable[str] | None = None) -> Callable[[], None]:
        """``callback`` runs on the replica's loop thread: keep it quick and thread-safe."""
        return self._ensure().subscribe(callback, fields)

    def snapshot(self) -> None:
        r = self._ensure()

        self._call(r.snapshot())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if os.getpid() == self._pid:
            self._call(self._replica.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _open_local_log(path: Path, fsync: str) -> Any:
    from .log.local import LocalLog

    return await LocalLog.open(path, fsync=fsync)  # type: ignore[arg-type]


async def _open_replica(kwargs: dict[str, Any]) -> Replica:
    return await Replica.open(**kwargs)
