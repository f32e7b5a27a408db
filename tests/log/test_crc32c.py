"""CRC-32C: the native binding and the pure-Python fallback agree."""

from __future__ import annotations

import os

from crdtsync import _crc32c


def test_check_value() -> None:
    assert _crc32c.crc32c(b"123456789") == 0xE3069283
    assert _crc32c.crc32c_python(b"123456789") == 0xE3069283
    assert _crc32c.crc32c(b"") == 0


def test_fallback_matches_native_and_continues() -> None:
    for n in (1, 7, 64, 1000):
        data = os.urandom(n)
        assert _crc32c.crc32c_python(data) == _crc32c.crc32c(data)
        a, b = data[: n // 2], data[n // 2 :]
        assert _crc32c.crc32c(b, _crc32c.crc32c(a)) == _crc32c.crc32c(data)
        assert _crc32c.crc32c_python(memoryview(b), _crc32c.crc32c_python(a)) == _crc32c.crc32c(data)


def test_native_is_used_when_installed() -> None:
    assert _crc32c.IMPLEMENTATION == "native"
