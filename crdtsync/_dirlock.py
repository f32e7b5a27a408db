"""One process at a time per data directory: an OS lock held for a replica's lifetime.

A replica's actor id (``name~incarnation``) lives in its data directory. Two processes
running on one directory would be one actor twice, allocating the same seqs for
different events, and every replica would keep only one of each pair: acknowledged
writes lost. :class:`DirLock` prevents that: :meth:`Replica.open
<crdtsync.replica.Replica.open>` takes it before reading the identity, ``close`` gives it
back, and the OS drops it when the process dies (however it dies), so a restart after a
crash never finds a stale lock. A second open, in this process or another, fails at once
with :class:`~crdtsync.errors.DataDirLocked`, which names the holder.

On-disk format: ``<data>/replica.lock``. The lock is ``fcntl.flock(LOCK_EX)`` on that
file, not its content. The holder writes its description there after taking the lock,
UTF-8 JSON on one line::

    {"pid": int, "host": str, "replica": str | null, "since": float (Unix seconds)}

The content is informational (error messages, ``crdtsync status``); it stays after the
holder exits, and then describes the last holder. A process that finds the lock taken
reads it, possibly half-written by a holder that just started: then the holder is
reported as unknown.

Forks: a forked child shares the parent's open file description, and with it the lock.
The child closes its copies at once (without unlocking, which would unlock the parent's
too), so the lock belongs to the parent alone and is freed when the parent dies, even if
children live on. (``SyncReplica`` re-opens a forked worker in a directory of its own,
``<data>/workers/<name>``, which it then locks.) Exec'd children never inherit it (the
descriptor is close-on-exec).

Caveat: ``flock`` is reliable on local filesystems; on NFS its behaviour depends on the
client (Linux emulates it with byte-range locks); keep data directories local.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import weakref
from pathlib import Path
from typing import Any

from .errors import DataDirLocked

__all__ = ["DirLock", "LOCK_NAME", "read_holder", "is_locked"]

LOCK_NAME = "replica.lock"

_held: weakref.WeakSet[DirLock] = weakref.WeakSet()


class DirLock:
    """The exclusive lock of one data directory, held until :meth:`release`."""

    __slots__ = ("path", "_fd", "__weakref__")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, replica: str | None = None) -> DirLock:
        """Lock ``data_dir`` (created if missing) or raise :class:`DataDirLocked`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _locked_error(data_dir, read_holder(data_dir)) from None
        lock = cls(path, fd)
        _held.add(lock)
        lock.describe(replica)
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def describe(self, replica: str | None) -> None:
        """(Re)write the holder description: this process, this host, ``replica``."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not held by this process")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "replica": replica, "since": time.time()}
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Unlock and close (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.discard(self)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _forget_in_child(self) -> None:
        # close our copy of the parent's description; LOCK_UN would unlock the parent too
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def read_holder(data_dir: Path) -> dict[str, Any] | None:
    """The holder description in ``data_dir``'s lock file (``None`` if absent or torn)."""
    try:
        info = json.loads((data_dir / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_locked(data_dir: Path) -> bool:
    """Whether some process holds ``data_dir`` now (a momentary shared-lock probe; never
    creates the lock file)."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _locked_error(data_dir: Path, info: dict[str, Any] | None) -> DataDirLocked:
    info = info or {}
    pid = info.get("pid") if type(info.get("pid")) is int else None
    host = info.get("host") if isinstance(info.get("host"), str) else None
    replica = info.get("replica") if isinstance(info.get("replica"), str) else None
    since = info.get("since") if isinstance(info.get("since"), (int, float)) else None
    if pid is None:
        who = "another process (it has not described itself yet)"
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since is not None else "?"
        who = f"replica {replica!r} (pid {pid} on {host}, since {when})"
    return DataDirLocked(
        f"{data_dir} is in use by {who}. Two replicas on one data directory would be one "
        "actor twice and lose writes: close or stop the holder first, or give this one a data "
        "directory of its own (read-only tools such as `crdtsync status` work meanwhile)",
        path=str(data_dir), pid=pid, host=host, replica=replica, since=since,
    )


def _after_fork_in_child() -> None:
    for lock in list(_held):
        lock._forget_in_child()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
