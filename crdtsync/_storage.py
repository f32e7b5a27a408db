"""One translation of ``OSError`` into crdtsync's typed storage errors.

Every place that writes files (the LocalLog, snapshot stores) passes the ``OSError`` it
got to :func:`storage_error`, which picks the class from the ``errno`` and writes the
message from three parts: what was being done, what happened to the data, and what to
do about this kind of failure. Other errnos (a vanished directory, a bug) are not
storage conditions a user can fix by freeing space or remounting; they stay as they are.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator

from .errors import StorageError, StorageFull, StorageUnavailable

__all__ = ["raise_typed", "remove_if_present", "storage_error", "typed_storage_errors"]

log = logging.getLogger("crdtsync.storage")

_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())

_ADVICE = {
    errno.EROFS: (
        "the filesystem is read-only (EROFS)",
        "If it was not mounted read-only on purpose, the kernel remounted it after I/O errors: check "
        "`dmesg` and the disk, then remount it read-write (or move the data directory to a healthy disk) "
        "and retry.",
    ),
    errno.EACCES: ("permission denied (EACCES)", "Give the user running this process write access to {path}, then retry."),
    errno.EPERM: ("operation not permitted (EPERM)", "Give the user running this process write access to {path}, then retry."),
    errno.EIO: (
        "the device reported an I/O error (EIO)",
        "The disk is failing: check `dmesg`, then move the data directory to a healthy disk (a replica can "
        "also start afresh and catch up from the log).",
    ),
}


def storage_error(exc: OSError, path: str | os.PathLike[str], doing: str, outcome: str) -> StorageError | None:
    """The typed error for ``exc``, or None when its errno is not a storage condition.

    ``doing`` says what failed ("appending to the LocalLog"), ``outcome`` what that means
    for the data ("Nothing was appended."). An error that is already typed is returned
    as it is.
    """
    if isinstance(exc, StorageError):
        return exc
    where = os.fspath(path)
    if exc.errno in _FULL:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return StorageFull(
            exc.errno,
            f"{doing} in {where} failed: no space left on the device ({name}). {outcome} Free space on that "
            "filesystem (or raise the quota), then retry.",
            exc.filename,
        )
    advice = _ADVICE.get(exc.errno) if exc.errno is not None else None
    if advice is None:
        return None
    what, todo = advice
    return StorageUnavailable(exc.errno, f"{doing} in {where} failed: {what}. {outcome} {todo.format(path=where)}", exc.filename)


def remove_if_present(path: str | os.PathLike[str]) -> None:
    """Delete a temporary file after a failed write; a failure to do so is logged."""
    if not os.path.lexists(path):  # never created (on a read-only filesystem unlink says EROFS)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not remove the temporary file %s: %s", os.fspath(path), exc)


def raise_typed(
    exc: OSError, path: str | os.PathLike[str], doing: str, outcome: str,
    counted: Callable[[StorageError], None] | None = None,
) -> None:
    """Raise the typed error for ``exc`` (from it) if it has one; return otherwise, so
    the caller re-raises ``exc`` itself. ``counted`` is called with each error typed here
    (not with one that was typed already). For hot paths: ``except OSError`` costs
    nothing until it fires, a context manager costs microseconds per call."""
    typed = storage_error(exc, path, doing, outcome)
    if typed is None or typed is exc:
        return
    if counted is not None:
        counted(typed)
    raise typed from exc


@contextlib.contextmanager
def typed_storage_errors(
    path: str | os.PathLike[str], doing: str, outcome: str, counted: Callable[[StorageError], None] | None = None
) -> Iterator[None]:
    """Raise a storage ``OSError`` escaping the block as its typed error (see
    :func:`raise_typed`). Other exceptions, and errors already typed, pass through."""
    try:
        yield
    except OSError as exc:
        raise_typed(exc, path, doing, outcome, counted)
        raise
