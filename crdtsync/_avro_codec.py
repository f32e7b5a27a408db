"""The Avro codec of event batches (``pip install 'crdtsync[avro]'``), re-exported as
:class:`crdtsync.events.AvroCodec`.

It carries the fields of batch format 1 with the schema in
``crdtsync/schemas/batch-v1.avsc``; each delta payload travels as msgpack bytes inside it.
With ``registry_id`` set, records use Confluent Schema-Registry framing: byte 0, then the
4-byte big-endian schema id, then the Avro body. Decoding validates as the msgpack codec
does: any problem is :class:`~crdtsync.errors.CorruptRecord` or
:class:`~crdtsync.errors.UnsupportedVersion`.
"""

from __future__ import annotations

import io
import json
import struct
from importlib import resources
from typing import Any

from ._encoding import corrupt, packb, unpackb
from .errors import CorruptRecord, UnsupportedVersion
from .events import AVRO_BATCH_VERSION, Batch, _build, _guard, _want

__all__ = ["AvroCodec"]

_AVRO_SCHEMA_FILE = "batch-v1.avsc"


def _load_avsc() -> dict[str, Any]:
    text = resources.files("crdtsync").joinpath("schemas").joinpath(_AVRO_SCHEMA_FILE).read_text()
    return json.loads(text)  # type: ignore[no-any-return]


class AvroCodec:
    """Avro via fastavro (``pip install 'crdtsync[avro]'``), optionally Schema-Registry framed.

    ``registry_id``: when set, records are framed as ``0x00 | schema id (u32 BE) | body``
    and decoding checks the id.
    """

    name = "avro"

    def __init__(self, registry_id: int | None = None) -> None:
        try:
            import fastavro
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError("the Avro codec needs fastavro: pip install 'crdtsync[avro]'") from exc
        self._fastavro = fastavro
        self.schema_json = _load_avsc()
        self._schema = fastavro.parse_schema(self.schema_json)
        self.registry_id = registry_id

    def encode(self, batch: Batch) -> bytes:
        rec = {
            "version": AVRO_BATCH_VERSION,
            "origin": batch.origin,
            "first_seq": batch.first_seq,
            "meta": dict(sorted(batch.meta.items())),
            "events": [
                {
                    "hlc": e.hlc,
                    "field": e.field,
                    "field_version": e.field_version,
                    "key": e.key,
                    "type_tag": e.delta.TYPE_TAG,
                    "delta_version": e.delta.VERSION,
                    "delta": packb(e.delta._payload()),
                }
                for e in batch.events
            ],
        }
        buf = io.BytesIO()
        if self.registry_id is not None:
            buf.write(b"\x00" + struct.pack(">I", self.registry_id))
        self._fastavro.schemaless_writer(buf, self._schema, rec)
        return buf.getvalue()

    def decode(self, data: bytes) -> Batch:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            corrupt("batch", "expected bytes")
        data = bytes(data)
        if self.registry_id is not None:
            _want(len(data) >= 5 and data[0] == 0, "missing Schema-Registry framing")
            (sid,) = struct.unpack(">I", data[1:5])
            _want(sid == self.registry_id, f"schema id {sid} is not the expected {self.registry_id}")
            data = data[5:]
        buf = io.BytesIO(data)
        try:
            rec: Any = self._fastavro.schemaless_reader(buf, self._schema, None)
        except Exception as exc:  # fastavro raises many types on garbage
            raise CorruptRecord(f"batch: not a valid Avro record ({type(exc).__name__})") from None
        _want(buf.tell() == len(data), "trailing bytes after the Avro record")
        _want(isinstance(rec, dict), "bad Avro record")
        version = rec["version"]
        if version > AVRO_BATCH_VERSION:
            raise UnsupportedVersion(f"batch format version {version} is newer than this build understands")
        _want(version >= 1, "bad batch version")
        rows = [
            [e["hlc"], e["field"], e["field_version"], e["key"], e["type_tag"], e["delta_version"], e["delta"]]
            for e in rec["events"]
        ]
        return _guard(lambda: _build(rec["origin"], rec["first_seq"], dict(rec["meta"]), rows,  # type: ignore[no-any-return]
                                     lambda p: unpackb(p, what="delta")))
