"""Fixtures shared by every test package under tests/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._disk import SmallDisk, small_disk_at


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A real 256 KiB tmpfs (real ENOSPC and EROFS), always unmounted; see tests/_disk.py."""
    with small_disk_at(tmp_path / "disk") as disk:
        yield disk
