"""A real, small filesystem for storage-error tests: a tmpfs mounted in the test's tmp dir.

``disk.fill()`` takes every free page (the next write that needs a page gets a real
``ENOSPC`` from the kernel), ``disk.free()`` gives them back, ``disk.read_only()``
remounts it read-only (real ``EROFS``; the kernel refuses this while a file on it is
open for writing, so close logs first) and ``disk.read_write()`` undoes that.

Mounting needs root. Policy: CI runs as root on the same kind of machine, so there the
fixture never skips: if it cannot mount (or CI is set and we are not root) the test
fails loudly. Only a developer run without root and without ``CI`` in the environment
skips these tests, with a message saying why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096


class SmallDisk:
    """A tmpfs of ``size`` bytes at ``path``; unmounted by the fixture, whatever happens."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._filler = path / ".filler"

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._run("mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path))

    def unmount(self) -> None:
        try:
            self._run("umount", str(self.path))
        except RuntimeError:
            self._run("umount", "-l", str(self.path))  # something still open: detach lazily
            raise

    def fill(self) -> int:
        """Take every free page; returns the bytes taken."""
        taken = 0
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while True:
                try:
                    taken += os.write(fd, b"\0" * PAGE)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    return taken
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink()

    def read_only(self) -> None:
        self._run("mount", "-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        self._run("mount", "-o", "remount,rw", str(self.path))

    def files(self, pattern: str = "*") -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob(pattern) if p != self._filler)


@contextlib.contextmanager
def small_disk_at(path: Path, size: int = 256 * 1024) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("storage-error tests need root to mount a tmpfs, and CI must run them: run CI as root")
        pytest.skip("needs root to mount a tmpfs (CI runs as root, and there these tests never skip)")
    disk = SmallDisk(path, size)
    try:
        disk.mount()
    except RuntimeError as exc:
        pytest.fail(f"could not mount a tmpfs for the storage-error tests: {exc}")
    try:
        yield disk
    finally:
        with contextlib.suppress(RuntimeError):  # only needed if the test left it read-only
            disk.read_write()
        disk.unmount()
