"""Events, batches and their codecs (msgpack default, Avro optional).

An :class:`Event` is one change: its origin replica and per-origin ``seq`` (together the
event's :class:`~crdtsync.clock.Dot`), its HLC time, the field (definition name and
version), the entity key, and the delta (a CRDT state, see :mod:`crdtsync.types`).
A log record carries a :class:`Batch`: events of one origin with contiguous seqs, plus
the origin's region and role (checked by the policy engine, never trusted alone).

msgpack record layout (format version 1), deterministic::

    [1, origin: str, first_seq: int, meta: [[str, str], ...] sorted,
        events: [[hlc: int, field: str, field_version: int, key: str,
                  type_tag: str, delta_version: int, delta_payload], ...]]

Event ``i`` of the batch has ``seq = first_seq + i``. ``meta`` holds ``region`` and
``role``. The Avro codec (``crdtsync[avro]``) carries the same fields with the schema in
``crdtsync/schemas/batch-v1.avsc``; each delta payload travels as msgpack bytes inside
it. With ``registry_id`` set, Avro records use Confluent Schema-Registry framing: byte 0,
then the 4-byte big-endian schema id, then the Avro body.

Decoding validates everything; any problem is :class:`~crdtsync.errors.CorruptRecord`
(or :class:`~crdtsync.errors.UnsupportedVersion`), never another exception, so the apply
loop can quarantine the record and go on.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple, Protocol

from ._encoding import check_envelope, corrupt, packb, unpackb
from .clock import Dot
from .errors import BadInput, CorruptRecord, UnsupportedVersion
from .types._base import CRDT, type_for_tag

__all__ = ["Event", "Batch", "Codec", "MsgpackCodec", "AvroCodec", "codec_for"]

BATCH_VERSION = 1
#: refuse batches larger than this many events (hostile sizes)
MAX_EVENTS_PER_BATCH = 100_000


class Event(NamedTuple):
    """One change to one field of one entity, as carried by the log (immutable)."""

    origin: str
    seq: int
    hlc: int
    field: str
    key: str
    delta: CRDT[Any]
    field_version: int = 1

    @property
    def dot(self) -> Dot:
        return Dot(self.origin, self.seq)

    @property
    def type_tag(self) -> str:
        return self.delta.TYPE_TAG


@dataclass(frozen=True, slots=True)
class Batch:
    """Events of one origin with contiguous seqs: the unit a log record carries."""

    origin: str
    first_seq: int
    events: tuple[Event, ...]
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, e in enumerate(self.events):
            if e.origin != self.origin or e.seq != self.first_seq + i:
                raise ValueError("a batch holds events of one origin with contiguous seqs")

    @classmethod
    def _trusted(cls, origin: str, first_seq: int, events: tuple[Event, ...], meta: Mapping[str, str]) -> Batch:
        """Build without re-checking (the decoder numbered the events itself)."""
        b = object.__new__(cls)
        object.__setattr__(b, "origin", origin)
        object.__setattr__(b, "first_seq", first_seq)
        object.__setattr__(b, "events", events)
        object.__setattr__(b, "meta", meta)
        return b

    @classmethod
    def of(cls, events: Sequence[Event], meta: Mapping[str, str] | None = None) -> Batch:
        if not events:
            raise ValueError("a batch needs at least one event")
        return cls(events[0].origin, events[0].seq, tuple(events), dict(meta or {}))

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


class Codec(Protocol):
    """Turns batches into log records and back."""

    name: str

    def encode(self, batch: Batch) -> bytes: ...

    def decode(self, data: bytes) -> Batch: ...


def _want(cond: bool, detail: str) -> None:
    if not cond:
        corrupt("batch", detail)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _build(origin: Any, first_seq: Any, meta: Any, rows: Sequence[Any], delta_of: Any) -> Batch:
    _want(type(origin) is str and 0 < len(origin) <= 256, "bad origin")
    _want(type(first_seq) is int and first_seq >= 1, "bad first_seq")
    _want(isinstance(rows, list) and 0 < len(rows) <= MAX_EVENTS_PER_BATCH, "bad event list")
    events = []
    classes: dict[Any, Any] = {}
    seq = first_seq
    for row in rows:
        hlc, fname, fversion, key, tag, dversion, payload = row
        # one combined check on the hot path; the slow path says what was wrong
        if not (type(hlc) is int and hlc >= 0 and type(fname) is str and 0 < len(fname) <= 256
                and type(fversion) is int and fversion >= 1 and type(key) is str and len(key) <= 4096
                and type(dversion) is int and dversion >= 1):
            _want(_is_int(hlc) and hlc >= 0, "bad hlc")
            _want(isinstance(fname, str) and 0 < len(fname) <= 256, "bad field name")
            _want(_is_int(fversion) and fversion >= 1, "bad field version")
            _want(isinstance(key, str) and len(key) <= 4096, "bad entity key")
            _want(False, "bad delta version")
        cls = classes.get(tag)
        if cls is None:
            _want(isinstance(tag, str), "bad type tag")
            cls = classes[tag] = type_for_tag(tag)
        if dversion > cls.VERSION:
            check_envelope([tag, dversion, None], tag, cls.VERSION)  # raises UnsupportedVersion
        delta = cls._decode_payload(delta_of(payload), dversion)
        events.append(Event(origin, seq, hlc, fname, key, delta, fversion))
        seq += 1
    return Batch._trusted(origin, first_seq, tuple(events), meta)


class MsgpackCodec:
    """The default codec: compact, fast, deterministic msgpack (see module docstring)."""

    name = "msgpack"

    def encode(self, batch: Batch) -> bytes:
        rows = [
            [e.hlc, e.field, e.field_version, e.key, e.delta.TYPE_TAG, e.delta.VERSION, e.delta._payload()]
            for e in batch.events
        ]
        meta = [[k, batch.meta[k]] for k in sorted(batch.meta)]
        return packb([BATCH_VERSION, batch.origin, batch.first_seq, meta, rows])

    def decode(self, data: bytes) -> Batch:
        obj = unpackb(data, what="batch")
        _want(isinstance(obj, list) and len(obj) == 5, "expected [version, origin, first_seq, meta, events]")
        version, origin, first_seq, meta_rows, rows = obj
        _want(_is_int(version) and version >= 1, "bad batch version")
        if version > BATCH_VERSION:
            raise UnsupportedVersion(
                f"batch format version {version} is newer than this build understands ({BATCH_VERSION}); "
                "upgrade crdtsync on this replica"
            )
        _want(isinstance(meta_rows, list), "bad meta")
        meta: dict[str, str] = {}
        for m in meta_rows:
            _want(isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m), "bad meta entry")
            meta[m[0]] = m[1]
        _want(isinstance(rows, list), "bad event list")
        for row in rows:
            _want(isinstance(row, list) and len(row) == 7, "event row is not 7 fields")
        return _guard(lambda: _build(origin, first_seq, meta, rows, lambda p: p))


def _guard(fn: Any) -> Batch:
    try:
        return fn()  # type: ignore[no-any-return]
    except BadInput:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
        raise CorruptRecord(f"batch: malformed ({type(exc).__name__}: {exc})") from None


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
            "version": BATCH_VERSION,
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
        if version > BATCH_VERSION:
            raise UnsupportedVersion(f"batch format version {version} is newer than this build understands")
        _want(version >= 1, "bad batch version")
        rows = [
            [e["hlc"], e["field"], e["field_version"], e["key"], e["type_tag"], e["delta_version"], e["delta"]]
            for e in rec["events"]
        ]
        return _guard(lambda: _build(rec["origin"], rec["first_seq"], dict(rec["meta"]), rows,
                                     lambda p: unpackb(p, what="delta")))


def codec_for(name: str) -> Codec:
    """The codec called ``name`` ("msgpack" or "avro")."""
    if name == "msgpack":
        return MsgpackCodec()
    if name == "avro":
        return AvroCodec()
    raise ValueError(f"unknown codec {name!r}; use 'msgpack' or 'avro'")
