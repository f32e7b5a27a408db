"""CRC-32C (Castagnoli), the checksum of every LocalLog record.

CRC-32C (polynomial 0x1EDC6F41, reflected 0x82F63B78, initial value and final XOR
0xFFFFFFFF; ``crc32c(b"123456789") == 0xE3069283``) is the checksum of iSCSI, ext4,
Kafka record batches and LevelDB/RocksDB logs, and most CPUs compute it in hardware.
The ``crc32c`` package (a core dependency) does exactly that. If it cannot be imported
(an unusual platform without a wheel), a pure-Python table implementation gives the
same values, slowly: about 10 MB/s instead of several GB/s.

``crc32c(data, value)`` continues a running checksum, so ``crc32c(b, crc32c(a))`` equals
``crc32c(a + b)`` without concatenating.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IMPLEMENTATION", "crc32c", "crc32c_python"]

_POLY = 0x82F63B78  # CRC-32C, bit-reflected


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Pure-Python CRC-32C: the fallback, and the reference the tests compare against."""
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c: Callable[..., int]
try:
    from crc32c import crc32c as _native_crc32c
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    crc32c = crc32c_python
    IMPLEMENTATION = "python"
else:
    # Bound directly (no wrapper): the log calls this twice per record.
    crc32c = _native_crc32c
    IMPLEMENTATION = "native"
