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
``role``.

msgpack record layout (format version 2, columnar: one row of columns per record)::

    [2, origin: str, first_seq: int, meta: [[str, str], ...] sorted,
        fields: [[field: str, field_version: int, type_tag: str, delta_version: int], ...],
        hlc0: int, hlc_steps: [int, ...], field_ix: [int, ...], keys: [str, ...],
        payloads: [delta_payload, ...]]

``keys`` and ``payloads`` have one entry per event (``n``, 1..100,000). ``fields`` lists
each distinct (field, field version, type tag, delta version) once, in order of first
use; ``field_ix[i]`` is event ``i``'s entry, and ``field_ix`` is ``[]`` when there is one
entry. HLCs (u64) are delta-encoded: event 0 has ``hlc0`` and event ``i`` has
``(hlc[i-1] + hlc_steps[i-1]) mod 2**64``, with ``n - 1`` steps each in ``0..2**64-1``
(a step back in time wraps around; one writer's stamps only go forward, so its steps
are small). A ``delta_version`` above the type's ``VERSION`` that equals its
``STAMPED_VERSION`` marks *stamped* payloads: each is only what the origin's own delta is
made of (an LWW ``set``: the stored value, with ts = the event's HLC and actor = origin;
a GCounter ``increment``: the origin's new total), which is what the replica's writer
sends; readers before this form see an unsupported delta version. Any other shape (a
non-canonical ``field_ix``, an unused or repeated ``fields`` entry) is corrupt. Validation is the same as version 1, done a column at a
time; types with a column form (:meth:`~crdtsync.types._base.CRDT._columns`) validate
their payloads in bulk without building a delta object per event.
:class:`MsgpackCodec` reads both versions and writes the one it was made with
(``write_version``, default 1; replicas write version 2, see :func:`codec_for`). The Avro codec (``crdtsync[avro]``, in ``crdtsync/_avro_codec.py``) carries the same fields with the schema in
``crdtsync/schemas/batch-v1.avsc``; each delta payload travels as msgpack bytes inside
it. With ``registry_id`` set, Avro records use Confluent Schema-Registry framing: byte 0,
then the 4-byte big-endian schema id, then the Avro body.

Decoding validates everything; any problem is :class:`~crdtsync.errors.CorruptRecord`
(or :class:`~crdtsync.errors.UnsupportedVersion`), never another exception, so the apply
loop can quarantine the record and go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count, repeat
from typing import Any, NamedTuple, Protocol

import msgpack

from . import speedups
from ._encoding import check_envelope, corrupt, packb, unpackb
from .clock import Dot
from .errors import BadInput, CorruptRecord, UnsupportedVersion
from .types._base import CRDT, type_for_tag

__all__ = ["Event", "Batch", "Codec", "MsgpackCodec", "AvroCodec", "codec_for"]

#: the newest msgpack batch format this build reads (and can write)
BATCH_VERSION = 2
#: the format Avro records carry (the schema in batch-v1.avsc)
AVRO_BATCH_VERSION = 1
_HLC_LIMIT = 2**64
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


def _meta_of(meta_rows: Any) -> dict[str, str]:
    _want(isinstance(meta_rows, list), "bad meta")
    meta: dict[str, str] = {}
    for m in meta_rows:
        _want(isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], str),
              "bad meta entry")
        meta[m[0]] = m[1]
    return meta


class _Group:
    """The events of one record that share a ``fields`` entry (batch format 2)."""

    __slots__ = ("field", "field_version", "cls", "positions", "keys", "cols", "deltas")

    def __init__(self, fname: str, fversion: int, cls: type[CRDT[Any]], positions: list[int] | None,
                 keys: list[str], cols: Any, deltas: list[CRDT[Any]] | None) -> None:
        self.field = fname
        self.field_version = fversion
        self.cls = cls
        #: record positions of these events (``None``: every event of the record)
        self.positions = positions
        self.keys = keys
        #: the type's validated column form (``CRDT._columns``), or ``None``
        self.cols = cols
        #: the decoded deltas when the type has no column form for these payloads
        self.deltas = deltas

    def delta_list(self) -> list[CRDT[Any]]:
        if self.deltas is None:
            self.deltas = self.cls._from_columns(self.cols)
        return self.deltas


class Columns:
    """A validated batch-format-2 record, column by column (internal).

    The replica's apply loop reads the columns directly; :meth:`batch` builds the
    :class:`Batch` (one :class:`Event` per event) only when something needs it, and
    :attr:`hlcs` the stamp column only when something reads it (the stamps were checked
    by the decoder; a record of counter increments applies with :attr:`last` alone).
    """

    __slots__ = ("origin", "first_seq", "meta", "n", "hlc0", "steps", "last", "_hlcs", "groups", "_batch",
                 "rising")

    def __init__(self, origin: str, first_seq: int, meta: dict[str, str], n: int, hlc0: int, steps: list[int],
                 last: int, rising: bool, hlcs: list[int] | None, groups: list[_Group]) -> None:
        self.origin = origin
        self.first_seq = first_seq
        self.meta = meta
        #: the number of events
        self.n = n
        #: the first stamp and the steps to each next one (validated: see ``hlc_check``)
        self.hlc0 = hlc0
        self.steps = steps
        #: the last event's stamp
        self.last = last
        self._hlcs = hlcs
        self.groups = groups
        self._batch: Batch | None = None
        #: whether the stamps never decrease (no step wrapped modulo 2**64): the
        #: largest stamp of any tail is then :attr:`last`
        self.rising = rising

    @property
    def hlcs(self) -> list[int]:
        """Every event's stamp (built on first use)."""
        if self._hlcs is None:
            self._hlcs = stamps_of(self.hlc0, self.steps)
        return self._hlcs

    def __len__(self) -> int:
        return self.n

    def batch(self) -> Batch:
        if self._batch is None:
            origin, first, hlcs = self.origin, self.first_seq, self.hlcs
            n = len(hlcs)
            new = tuple.__new__
            if len(self.groups) == 1 and self.groups[0].positions is None:  # (one field: a column at a time)
                g = self.groups[0]
                rows = zip(repeat(origin), count(first), hlcs, repeat(g.field), g.keys, g.delta_list(),
                           repeat(g.field_version))
                self._batch = Batch._trusted(origin, first, tuple(map(new, repeat(Event), rows)), self.meta)
                return self._batch
            events: list[Any] = [None] * n
            for g in self.groups:
                fname, fversion = g.field, g.field_version
                positions = g.positions if g.positions is not None else range(n)
                for i, key, delta in zip(positions, g.keys, g.delta_list()):
                    events[i] = new(Event, (origin, first + i, hlcs[i], fname, key, delta, fversion))
            self._batch = Batch._trusted(origin, first, tuple(events), self.meta)
        return self._batch


def stamps_of(hlc0: int, steps: list[int]) -> list[int]:
    """The stamp column of a format-2 record whose steps were checked."""
    column = speedups.hot.hlc_column(hlc0, steps)
    if column is None:  # (the decoder checked them with hlc_check: only a bug gets here)
        raise AssertionError("stamps_of: steps that hlc_check accepted were refused")
    stamps: list[int] = column[0]
    return stamps


def _encode_v1(batch: Batch) -> bytes:
    rows = [
        [e.hlc, e.field, e.field_version, e.key, e.delta.TYPE_TAG, e.delta.VERSION, e.delta._payload()]
        for e in batch.events
    ]
    meta = [[k, batch.meta[k]] for k in sorted(batch.meta)]
    return packb([1, batch.origin, batch.first_seq, meta, rows])


def encode_v2(origin: str, first_seq: int, meta: Mapping[str, str], fields: list[list[Any]],
              hlcs: Sequence[int], fix: list[int], keys: Sequence[str], payloads: Sequence[Any],
              packed: bool = False) -> bytes:
    """A batch-format-2 record from its columns (the layout of the module docstring).

    ``fields``: the ``[field, field_version, type_tag, delta_version]`` entries in order of
    first use; ``fix``: each event's entry (``[]`` when there is one). The replica's
    writer calls this straight from its columnar queue; :class:`MsgpackCodec` from a
    :class:`Batch`. ``packed``: every payload is already msgpack bytes (what
    :func:`~crdtsync._encoding.packb` makes of it, e.g. an LWW register's stored flat
    list), spliced in as it is: the same record bytes as packing the payloads here.
    """
    steps = speedups.hot.hlc_steps(hlcs)
    meta_rows = [[k, meta[k]] for k in sorted(meta)]
    if not packed:
        return packb([2, origin, first_seq, meta_rows, fields, hlcs[0], steps, fix, keys, payloads])
    head = packb([2, origin, first_seq, meta_rows, fields, hlcs[0], steps, fix, keys])
    # a 9-part array (fixarray 0x99) becomes the 10-part one (0x9a) whose last part is the payload array
    return b"".join((b"\x9a", head[1:], _array_header(len(payloads)), *payloads))


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` elements."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _encode_v2(batch: Batch) -> bytes:
    events = batch.events
    _, _, hlcs, fnames, keys, deltas, fversions = zip(*events)
    classes: set[type[CRDT[Any]]] = set(map(type, deltas))
    if len(classes) == 1 and len(set(fnames)) == 1 and len(set(fversions)) == 1:
        (cls,) = classes
        fields: list[list[Any]] = [[fnames[0], fversions[0], cls.TYPE_TAG, cls.VERSION]]
        fix: list[int] = []
        payloads = cls._payloads(deltas)
    else:
        entries: dict[tuple[str, int, type[Any]], int] = {}
        fix = []
        for e in events:
            k = (e.field, e.field_version, type(e.delta))
            j = entries.get(k)
            if j is None:
                j = entries[k] = len(entries)
            fix.append(j)
        fields = [[f, v, c.TYPE_TAG, c.VERSION] for f, v, c in entries]
        payloads = [d._payload() for d in deltas]
    return encode_v2(batch.origin, batch.first_seq, batch.meta, fields, hlcs, fix, keys, payloads)


def _decode_v2(obj: list[Any]) -> Columns:
    _want(len(obj) == 10, "expected 10 fields in a format-2 batch")
    _, origin, first_seq, meta_rows, fields, hlc0, steps, fix, keys, payloads = obj
    n = len(keys) if type(keys) is list else 0
    if not (type(origin) is str and 0 < len(origin) <= 256 and type(first_seq) is int and first_seq >= 1
            and 0 < n <= MAX_EVENTS_PER_BATCH and type(payloads) is list and len(payloads) == n
            and type(hlc0) is int and 0 <= hlc0 < _HLC_LIMIT and type(steps) is list and len(steps) == n - 1):
        # one combined check on the hot path; the slow path says what was wrong, in order
        _want(type(origin) is str and 0 < len(origin) <= 256, "bad origin")
        _want(type(first_seq) is int and first_seq >= 1, "bad first_seq")
        _meta_of(meta_rows)
        _want(type(keys) is list and 0 < len(keys) <= MAX_EVENTS_PER_BATCH, "bad event list")
        _want(speedups.hot.keys_ok(keys, 4096), "bad entity key")
        _want(type(payloads) is list and len(payloads) == n, "payload column does not match the keys")
        # HLCs: a start and n - 1 steps, all u64, added modulo 2**64
        _want(type(hlc0) is int and 0 <= hlc0 < _HLC_LIMIT, "bad hlc")
        _want(False, "hlc column does not match the keys")
    meta = _meta_of(meta_rows)
    _want(speedups.hot.keys_ok(keys, 4096), "bad entity key")
    checked = speedups.hot.hlc_check(hlc0, steps)  # (the column itself only if needed)
    _want(checked is not None, "bad hlc step")
    last, rising = checked
    hlcs: list[int] | None = None
    # the fields table: distinct entries, each used, in order of first use
    _want(type(fields) is list and 0 < len(fields) <= n, "bad fields table")
    table: list[tuple[str, int, type[CRDT[Any]], int]] = []
    for entry in fields:
        _want(type(entry) is list and len(entry) == 4, "fields entry is not 4 fields")
        fname, fversion, tag, dversion = entry
        _want(type(fname) is str and 0 < len(fname) <= 256, "bad field name")
        _want(type(fversion) is int and fversion >= 1, "bad field version")
        _want(type(tag) is str, "bad type tag")
        _want(type(dversion) is int and dversion >= 1, "bad delta version")
        cls = type_for_tag(tag)
        if dversion > cls.VERSION and dversion != cls.STAMPED_VERSION:
            check_envelope([tag, dversion, None], tag, cls.VERSION)  # raises UnsupportedVersion
        table.append((fname, fversion, cls, dversion))
    _want(len(set(table)) == len(table), "repeated fields entry")
    _want(type(fix) is list, "bad field index column")
    if len(table) == 1:
        _want(not fix, "field index column must be empty for one fields entry")
        parts: list[tuple[list[int] | None, list[str], list[Any]]] = [(None, keys, payloads)]
    else:
        _want(len(fix) == n and set(map(type, fix)) == {int}, "bad field index column")
        _want(list(dict.fromkeys(fix)) == list(range(len(table))), "field index column is not canonical")
        where: list[list[int]] = [[] for _ in table]
        for i, j in enumerate(fix):
            where[j].append(i)
        parts = [(pos, [keys[i] for i in pos], [payloads[i] for i in pos]) for pos in where]
    groups = []
    for (fname, fversion, cls, dversion), (pos, gkeys, gpayloads) in zip(table, parts):
        if dversion > cls.VERSION:  # the stamped form: the rest of each delta is its event's
            if hlcs is None and cls.STAMPED_NEEDS_HLCS:
                hlcs = stamps_of(hlc0, steps)
            ts: Any = hlcs if pos is None or hlcs is None else [hlcs[i] for i in pos]
            cols = cls._stamped_columns(gpayloads, ts, origin)
            _want(cols is not None, f"bad stamped {cls.TYPE_TAG} payloads")
            groups.append(_Group(fname, fversion, cls, pos, gkeys, cols, None))
            continue
        cols = cls._columns(gpayloads, dversion)
        deltas = None
        if cols is None:
            decode = cls._decode_payload
            deltas = [decode(p, dversion) for p in gpayloads]
        groups.append(_Group(fname, fversion, cls, pos, gkeys, cols, deltas))
    return Columns(origin, first_seq, meta, n, hlc0, steps, last, rising, hlcs, groups)


class MsgpackCodec:
    """The default codec: compact, fast, deterministic msgpack (see module docstring).

    ``write_version``: the batch format :meth:`encode` writes, 1 (default; every
    crdtsync release reads it) or 2 (columnar and faster to decode; needs a reader of
    this release or newer). Decoding accepts both.
    """

    name = "msgpack"

    def __init__(self, write_version: int = 1, *, stamped: bool = True) -> None:
        if write_version not in (1, 2):
            raise ValueError(f"batch format version {write_version} does not exist; use 1 or 2")
        self.write_version = write_version
        #: whether a replica's writer may send its own LWW sets and counter increments in
        #: their stamped form (format 2 only). ``False`` for a fleet that still has
        #: readers of the release before it (they would quarantine those records).
        self.stamped = stamped and write_version == 2

    def encode(self, batch: Batch) -> bytes:
        if self.write_version == 2:
            return _encode_v2(batch)
        return _encode_v1(batch)

    def span(self, data: bytes) -> tuple[str, int, int] | None:
        """``(origin, first_seq, number of events)`` read from a format-2 record's header
        without decoding it, or None (another format, or not well-formed enough to tell:
        :meth:`decode_record` says what is wrong). Nothing here is validated beyond that:
        a replica uses it only to skip records whose every dot it already holds."""
        if type(data) is bytes:
            got = speedups.hot.record_span(data)  # (C: the header read in place)
            if got is not None:
                return got  # type: ignore[no-any-return]
        try:
            up = msgpack.Unpacker(None, raw=False, max_buffer_size=len(data) + 1)
            up.feed(data)
            if up.read_array_header() != 10 or up.unpack() != 2:
                return None
            origin, first = up.unpack(), up.unpack()
            for _ in range(5):  # meta, fields, hlc0, steps, fix
                up.skip()
            n = up.read_array_header()
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
                msgpack.OutOfData, RecursionError, OverflowError, MemoryError):
            return None
        if type(origin) is not str or type(first) is not int or first < 1 or n < 1:
            return None  # (not a valid record: decoding says so, and it is quarantined)
        return origin, first, n

    def envelope(self, data: bytes) -> tuple[str, int, dict[str, str]]:
        """``(origin, first_seq, meta)`` of a record, checking only its envelope: a batch of
        a format this build reads (raises :class:`UnsupportedVersion` for a newer one), the
        right number of parts, a valid origin, first seq and meta (:class:`CorruptRecord`
        otherwise). The events are not decoded: :meth:`decode_record` validates them. For
        a log that sorts out what is not a crdtsync batch before any replica decodes it."""
        up = msgpack.Unpacker(None, raw=False, max_buffer_size=len(data) + 1)
        up.feed(data)
        try:
            parts = up.read_array_header()
            version: Any = up.unpack() if parts else None
            head = [up.unpack() for _ in range(3)] if parts >= 4 else None
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
                msgpack.OutOfData, RecursionError, OverflowError, MemoryError) as exc:
            corrupt("batch", f"not a crdtsync batch ({type(exc).__name__})")
        _want(_is_int(version) and version >= 1, "bad batch version")
        if version > BATCH_VERSION:
            raise UnsupportedVersion(
                f"batch format version {version} is newer than this build understands ({BATCH_VERSION}); "
                "upgrade crdtsync on this replica"
            )
        want = 10 if version == 2 else 5
        _want(parts == want and head is not None, f"expected {want} fields in a format-{version} batch")
        origin, first_seq, meta_rows = head  # type: ignore[misc]
        _want(type(origin) is str and 0 < len(origin) <= 256, "bad origin")
        _want(type(first_seq) is int and first_seq >= 1, "bad first_seq")
        return origin, first_seq, _meta_of(meta_rows)

    def decode(self, data: bytes) -> Batch:
        rec = self.decode_record(data)
        return rec.batch() if type(rec) is Columns else rec  # type: ignore[return-value]

    def decode_record(self, data: bytes) -> Batch | Columns:
        """Decode and validate a record: a :class:`Batch` (format 1) or :class:`Columns` (format 2)."""
        obj = speedups.hot.unpack_record(data)  # (C: the common shapes; None: msgpack's to unpack)
        if obj is None:
            obj = unpackb(data, what="batch")
        _want(type(obj) is list and len(obj) >= 1, "expected [version, origin, first_seq, meta, ...]")
        version = obj[0]
        _want(_is_int(version) and version >= 1, "bad batch version")
        if version > BATCH_VERSION:
            raise UnsupportedVersion(
                f"batch format version {version} is newer than this build understands ({BATCH_VERSION}); "
                "upgrade crdtsync on this replica"
            )
        if version == 2:
            return _guard(lambda: _decode_v2(obj))  # type: ignore[no-any-return]
        _want(len(obj) == 5, "expected [version, origin, first_seq, meta, events]")
        _, origin, first_seq, meta_rows, rows = obj
        meta = _meta_of(meta_rows)
        _want(isinstance(rows, list), "bad event list")
        for row in rows:
            _want(isinstance(row, list) and len(row) == 7, "event row is not 7 fields")
        return _guard(lambda: _build(origin, first_seq, meta, rows, lambda p: p))  # type: ignore[no-any-return]


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except BadInput:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
        raise CorruptRecord(f"batch: malformed ({type(exc).__name__}: {exc})") from None


def codec_for(name: str) -> Codec:
    """The codec called ``name`` ("msgpack" or "avro").

    ``"msgpack"`` is what replicas write by default: batch format 2 (see the module
    docstring). A fleet with replicas older than format 2 passes ``MsgpackCodec()``
    (format 1) to :meth:`~crdtsync.replica.Replica.open` until every reader is upgraded.
    """
    if name == "msgpack":
        return MsgpackCodec(write_version=2)
    if name == "avro":
        return AvroCodec()
    raise ValueError(f"unknown codec {name!r}; use 'msgpack' or 'avro'")


from ._avro_codec import AvroCodec  # noqa: E402  (it builds on the names above)
