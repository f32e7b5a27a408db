"""Documents: nested JSON-like configuration and collaborative text, backed by pycrdt (Yjs).

Both types keep their content in a Yjs document (pycrdt, the Python binding of the Rust
port ``yrs``) and their deltas are Yjs updates: a mutator runs one Yjs transaction and the
delta carries exactly that transaction's update. This module turns a mutable, panic-prone
Yjs ``Doc`` into immutable crdtsync states and handles pycrdt's pitfalls:

* **A state is bytes, never a live Doc.** It holds the canonical full-state update of
  everything integrated, plus the *pending* updates that cannot integrate yet (their causal
  dependencies have not arrived). Every read and every mutation builds a private,
  call-local Doc from those bytes, works in one transaction and drops the Doc before
  returning: no Doc is shared between threads or calls, none is handed to a
  caller, and reads cache plain Python data only (threads may share states freely).
* **join** applies both states' updates to one fresh Doc and takes ``get_update()``;
  pycrdt's ``merge_updates`` is never used (it is quadratic).
* **Causal buffering.** pycrdt 0.14's ``get_update()`` silently drops pending structs and
  deletions, and yrs integrates structs past a clock gap in an order-dependent way. So
  each incoming update is first read here (clock range per client, the items it refers
  to, the ranges it deletes: see :func:`_parse_update`) and handed to yrs only once all
  of it integrates; until then it is kept, byte for byte, in the state's pending set. The
  Doc therefore only ever sees updates in causal order, deltas may be joined in any order,
  and the state converges once the missing updates arrive.
* **Canonical bytes.** Applying a set of updates in separate transactions leaves block
  splits that depend on the order of arrival, so ``get_update()`` is *not*
  byte-deterministic in general. Every state is therefore built by applying all its
  updates, in causal order, in **one** transaction (its commit squashes every mergeable
  block); the result was checked to be a fixpoint and independent of the order of joins.
  The pending set is sorted. Equal content gives equal bytes, so ``==``, ``hash`` and
  ``encode`` agree across replicas; a decoder re-derives this form and rejects anything
  that differs.
* **Untrusted bytes.** Every update is validated against the type's layout before yrs
  sees it (only the content kinds the type writes, only its root type). A Rust panic
  surfaces as pyo3's ``PanicException``, a ``BaseException``: every apply of stored or
  received bytes catches exactly that (and ordinary exceptions) and raises
  :class:`~crdtsync.errors.CorruptRecord`; ``KeyboardInterrupt`` and ``SystemExit`` pass
  through.
* **Client ids.** A writer's Yjs client id is derived from its actor id
  (:func:`yjs_client_id`: blake2b, reduced to ``1 .. 2**53 - 1``, Yjs's safe integer
  range), so a replica keeps continuing its own Yjs clock across calls and restarts.
  Assumption, guaranteed by the replica layer: an actor id whose state was lost is never
  reused (a restarted replica without its state takes a new incarnation id); reusing it
  would reuse Yjs clocks and make replicas diverge silently. For the same reason, always
  mutate the writer's latest state (the one that includes its own earlier deltas); a
  state holding the writer's own updates as pending refuses the write.
* **Lineage.** The Yjs state vector is *not* crdtsync's causal context (deletions do not
  advance it, and it counts Yjs structs, not events); lineage uses the replica's event
  dots.

Wire format (payload of the ``[tag, version, payload]`` envelope, both types)::

    [integrated: bin, [pending: bin, ...]]

``integrated`` is a Yjs v1 update: exactly ``get_update()`` of a fresh Doc it was applied
to in one transaction, self-contained (it integrates into an empty Doc). Each ``pending``
is a Yjs v1 update as its writer produced it that does not integrate into
``integrated`` yet; they are sorted ascending and unique. The empty state is
``[b"\\x00\\x00", []]``.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pycrdt import Doc, Map
from pycrdt import Text as _YText
from pycrdt import get_state as _update_state

from .._encoding import canonical, corrupt, packb, unpackb
from ..errors import CorruptRecord, CrdtSyncError
from ._base import CRDT, actor_of, register, want_list

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Document", "DocumentPath", "Text", "yjs_client_id"]

#: A document path: a tuple of keys, or a dotted string ("model.threshold").
DocumentPath = tuple[str, ...] | str

_EMPTY_UPDATE = b"\x00\x00"
#: Yjs client ids must stay within JavaScript's safe integer range.
_MAX_CLIENT_ID = 2**53 - 1
_MAX_PATH_DEPTH = 32
_MAX_VALUE_DEPTH = 32


def yjs_client_id(actor: str) -> int:
    """The Yjs client id a writer uses: a stable hash of its actor id.

    blake2b of the UTF-8 actor id, reduced to ``1 .. 2**53 - 1``. Two different actors
    collide with probability about ``n**2 / 2**54`` for ``n`` actors (negligible for any
    real fleet). Among concurrent writes of one document key, the write of the actor with
    the higher client id wins.
    """
    actor_of(actor)
    digest = hashlib.blake2b(actor.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _MAX_CLIENT_ID + 1


# -- guarding pycrdt ---------------------------------------------------------------------


def _is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (a Rust panic), which derives from BaseException."""
    return any(c.__name__ == "PanicException" for c in type(exc).__mro__)


@contextmanager
def _untrusted(what: str) -> Iterator[None]:
    """Map failures of pycrdt on bad bytes (errors or Rust panics) to CorruptRecord."""
    try:
        yield
    except CrdtSyncError:
        raise
    except Exception as exc:
        raise CorruptRecord(
            f"{what}: the Yjs decoder rejected the update ({type(exc).__name__}: {exc})"
        ) from None
    except BaseException as exc:
        if not _is_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit
        raise CorruptRecord(f"{what}: the Yjs decoder panicked on the update ({exc})") from None


# -- the Yjs v1 update format, as far as causal buffering and validation need it ----------
#
# update  := structs delete_set
# structs := varuint n, n * (varuint count, varuint client, varuint clock, count * struct)
# struct  := u8 info; info & 0x1f is the content ref: 0 GC (varuint len), 10 Skip
#            (varuint len), else an item: [origin id if info & 0x80] [right origin id if
#            info & 0x40] [only when it has neither origin: parent (varuint 1 + root name,
#            or varuint 0 + id) and, if info & 0x20, its key in the parent map] content
# id      := varuint client, varuint clock
# delete_set := varuint n, n * (varuint client, varuint ranges, ranges * (clock, len))
#
# Only the content kinds the two layouts produce are accepted: Deleted (ref 1, varuint
# len) in both, String (ref 4, UTF-8 string, counting UTF-16 units of clock) in text,
# and Any (ref 8) holding exactly one Uint8Array (lib0 type 116) that is a valid entry in
# a document. Anything else (nested types, embeds, formats, gaps) is rejected, so nothing
# that ever integrates can break a reader.


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("truncated update")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varuint(self) -> int:
        result = 0
        shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varuint longer than 64 bits")

    def raw(self) -> bytes:
        n = self.varuint()
        start = self.pos
        if start + n > len(self.buf):
            raise ValueError("truncated update")
        self.pos += n
        return self.buf[start : self.pos]

    def string(self) -> str:
        return self.raw().decode("utf-8")


class _UpdateInfo:
    """What an update needs and provides, in clock ranges per client."""

    __slots__ = ("needs", "ranges")

    def __init__(self, ranges: dict[int, tuple[int, int]], needs: dict[int, int]) -> None:
        #: client -> (first clock, end clock) of the structs the update carries
        self.ranges = ranges
        #: client -> the state-vector clock the update's references and deletions need
        self.needs = needs

    def integrable(self, sv: Mapping[int, int]) -> bool:
        """Whether applying the update to a Doc at ``sv`` integrates all of it.

        Its structs must continue each client's clock without a gap, and every item it
        references (origins) or deletes must be known.
        """
        have = dict(sv)
        for client, (start, end) in self.ranges.items():
            known = sv.get(client, 0)
            if start > known:
                return False
            have[client] = max(known, end)
        return all(have.get(client, 0) >= clock for client, clock in self.needs.items())

    def extend(self, sv: dict[int, int]) -> None:
        for client, (_, end) in self.ranges.items():
            if end > sv.get(client, 0):
                sv[client] = end


def _content_length(r: _Reader, ref: int, root: str) -> int:
    """Read an item's content, check the layout allows it, return its clock length."""
    if ref == 1:  # deleted content
        n = r.varuint()
    elif ref == 4 and root == Text._ROOT:
        n = len(r.string().encode("utf-16-le")) // 2
    elif ref == 8 and root == Document._ROOT:
        if r.varuint() != 1 or r.byte() != 116 or _decode_entry(r.raw()) is None:
            raise ValueError("document entries hold one tagged binary value")
        n = 1
    else:
        raise ValueError(f"content kind {ref} is not part of the {root!r} layout")
    if n < 1:
        raise ValueError("empty item")
    return n


def _parse_update(update: bytes, root: str) -> _UpdateInfo:
    """Validate an update against a layout and read its clock ranges and dependencies.

    Raises ValueError (or UnicodeDecodeError) if the update is malformed or holds content
    the layout (``root``: which root type and what it may hold) does not allow. Updates
    with gaps (Skip structs, as ``merge_updates`` of non-contiguous updates produces) are
    rejected: crdtsync buffers whole updates until they integrate. Small updates (deltas)
    are cached: pending ones are re-examined at every join until they integrate.
    """
    if len(update) <= _CACHED_UPDATE_SIZE:
        return _parse_small_update(update, root)
    return _parse(update, root)


_CACHED_UPDATE_SIZE = 4096


@functools.lru_cache(maxsize=4096)
def _parse_small_update(update: bytes, root: str) -> _UpdateInfo:
    return _parse(update, root)


def _parse(update: bytes, root: str) -> _UpdateInfo:
    r = _Reader(update)
    ranges: dict[int, tuple[int, int]] = {}
    needs: dict[int, int] = {}

    def need(client: int, clock: int) -> None:
        if clock + 1 > needs.get(client, 0):
            needs[client] = clock + 1

    for _ in range(r.varuint()):
        count = r.varuint()
        client = r.varuint()
        clock = start = r.varuint()
        if client in ranges or not 0 < client <= _MAX_CLIENT_ID or count < 1:
            raise ValueError("bad struct group header")
        for _ in range(count):
            info = r.byte()
            ref = info & 0x1F
            if ref == 0:  # GC
                n = r.varuint()
                if n < 1:
                    raise ValueError("empty GC struct")
                clock += n
                continue
            if ref == 10:
                raise ValueError("update has a gap (Skip struct); apply updates in causal order")
            if info & 0x80:
                need(r.varuint(), r.varuint())
            if info & 0x40:
                need(r.varuint(), r.varuint())
            if info & 0xC0 == 0:
                if r.varuint() != 1 or r.string() != root:
                    raise ValueError(f"item outside the {root!r} root type")
                if root == Document._ROOT:
                    if not info & 0x20 or _path_of_key(r.string()) is None:
                        raise ValueError("document entry key is not a canonical JSON path")
                elif info & 0x20:
                    raise ValueError("text holds a keyed entry")
            clock += _content_length(r, ref, root)
        if clock > _MAX_CLIENT_ID:
            raise ValueError("clock out of range")
        ranges[client] = (start, clock)
    for _ in range(r.varuint()):
        client = r.varuint()
        for _ in range(r.varuint()):
            clock = r.varuint()
            length = r.varuint()
            if length < 1 or clock + length > _MAX_CLIENT_ID:
                raise ValueError("bad delete range")
            need(client, clock + length - 1)
    if r.pos != len(update):
        raise ValueError("trailing bytes after the delete set")
    return _UpdateInfo(ranges, needs)


def _read_state_vector(sv: bytes) -> dict[int, int]:
    """``varuint n, (varuint client, varuint clock) * n``."""
    r = _Reader(sv)
    out: dict[int, int] = {}
    for _ in range(r.varuint()):
        client = r.varuint()
        out[client] = r.varuint()
    return out


def _settle(full: Iterable[bytes], loose: Iterable[bytes], root: str, what: str) -> tuple[bytes, tuple[bytes, ...]]:
    """Join updates: return the canonical integrated update and the pending ones.

    ``full`` are canonical integrated updates (self-contained, already validated);
    ``loose`` are any other updates (deltas, pending ones, bytes from outside), validated
    against the layout of ``root`` (see :func:`_parse_update`). A loose
    update is applied only once it integrates completely (see
    :meth:`_UpdateInfo.integrable`), in rounds, so the Doc only ever sees updates in
    causal order: yrs then has nothing pending and no gaps, whose handling in pycrdt
    0.14 depends on arrival order and whose pending parts ``get_update()`` drops. The
    rest stays pending, byte for byte as received. Everything is applied in one
    transaction, whose commit squashes every mergeable block: that makes
    ``get_update()`` canonical (separate transactions leave block splits that depend on
    the order of arrival). No Doc is built when nothing has to be applied.
    """
    full_set = sorted({u for u in full if u != _EMPTY_UPDATE})
    waiting: dict[bytes, _UpdateInfo] = {}
    for u in set(loose):
        try:
            waiting[u] = _parse_update(u, root)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"{what}: malformed Yjs update ({exc})") from None
    sv: dict[int, int] = {}
    with _untrusted(what):
        for u in full_set:
            for client, clock in _read_state_vector(_update_state(u)).items():
                sv[client] = max(sv.get(client, 0), clock)
    order: list[bytes] = []
    while True:
        ready = sorted(u for u, info in waiting.items() if info.integrable(sv))
        if not ready:
            break
        for u in ready:
            waiting.pop(u).extend(sv)
        order.extend(ready)
    pending = tuple(sorted(waiting))
    if not order and len(full_set) <= 1:
        return (full_set[0] if full_set else _EMPTY_UPDATE), pending
    doc: Doc[Any] = Doc()
    with _untrusted(what):
        with doc.new_transaction():
            for u in (*full_set, *order):
                doc.apply_update(u)
        integrated = doc.get_update()
        got = _read_state_vector(doc.get_state())
    if got != {c: k for c, k in sv.items() if k}:
        raise CorruptRecord(f"{what}: an update did not integrate as its structure claims")
    return integrated, pending


# -- the shared state machinery ----------------------------------------------------------

V = TypeVar("V")


class _YState(CRDT[V]):
    """Immutable Yjs-backed state: canonical integrated update plus pending updates."""

    __slots__ = ("_cache", "_pending", "_update")

    #: name of the Yjs root type holding the content
    _ROOT: ClassVar[str]

    def __init__(self) -> None:
        self._update: bytes = _EMPTY_UPDATE
        self._pending: tuple[bytes, ...] = ()
        self._cache: Any = None

    @classmethod
    def _make(cls, update: bytes, pending: tuple[bytes, ...]) -> Self:
        state = cls.__new__(cls)
        state._update = update
        state._pending = pending
        state._cache = None
        return state

    # -- Yjs interop -----------------------------------------------------------------
    @classmethod
    def from_update(cls, update: bytes) -> Self:
        """A state holding a Yjs v1 update from elsewhere (validated like :meth:`decode`).

        The update must use this type's layout (see the class docstring) and have no
        gaps; raises :class:`~crdtsync.errors.CorruptRecord` otherwise.
        """
        if not isinstance(update, (bytes, bytearray, memoryview)):
            raise TypeError(f"update must be bytes, got {type(update).__name__}")
        integrated, pending = _settle((), [bytes(update)], cls._ROOT, cls.TYPE_TAG)
        return cls._make(integrated, pending)

    def yjs_updates(self) -> tuple[bytes, ...]:
        """Yjs v1 updates that rebuild this state: the integrated one, then the pending ones.

        Apply them in order to any Yjs document (pycrdt, yrs, Yjs) to see the same
        content. They are copies: changing a Doc built from them does not change the state.
        """
        return (self._update, *self._pending)

    @property
    def has_pending(self) -> bool:
        """True while updates wait for causal dependencies that have not arrived yet."""
        return bool(self._pending)

    # -- protocol --------------------------------------------------------------------
    def join(self, other: Self) -> Self:
        self._check_joinable(other)
        if other._update == _EMPTY_UPDATE and not other._pending:
            return self
        if self._update == _EMPTY_UPDATE and not self._pending:
            return other
        if self._update == other._update and self._pending == other._pending:
            return self
        integrated, pending = _settle(
            (self._update, other._update), (*self._pending, *other._pending), self._ROOT, self.TYPE_TAG
        )
        if integrated == self._update and pending == self._pending:
            return self
        if integrated == other._update and pending == other._pending:
            return other
        return type(self)._make(integrated, pending)

    def _payload(self) -> Any:
        return [self._update, list(self._pending)]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> Self:
        rows = want_list(payload, cls.TYPE_TAG)
        if len(rows) != 2:
            corrupt(cls.TYPE_TAG, "expected [integrated update, [pending updates]]")
        update, pending = rows
        if not isinstance(update, bytes) or not update:
            corrupt(cls.TYPE_TAG, "the integrated update must be non-empty bytes")
        pend = want_list(pending, f"{cls.TYPE_TAG} pending")
        if not all(isinstance(p, bytes) and p for p in pend):
            corrupt(cls.TYPE_TAG, "pending updates must be non-empty bytes")
        if any(not a < b for a, b in itertools.pairwise(pend)):
            corrupt(cls.TYPE_TAG, "pending updates are not sorted and unique")
        # The integrated update must integrate on its own (it is then a full state)...
        integrated, rest = _settle((), [update], cls._ROOT, cls.TYPE_TAG)
        if rest or integrated != update:
            corrupt(cls.TYPE_TAG, "the integrated update is not in canonical form (or is not self-contained)")
        # ...and every pending one must still be waiting for something.
        _, settled = _settle([update], pend, cls._ROOT, cls.TYPE_TAG)
        if settled != tuple(pend):
            corrupt(cls.TYPE_TAG, "a pending update is already integrable")
        return cls._make(update, tuple(pend))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _YState)
        return self._update == other._update and self._pending == other._pending

    __hash__ = CRDT.__hash__

    # -- Doc plumbing ----------------------------------------------------------------
    def _read(self, reader: Callable[[Doc[Any]], Any], doc: Doc[Any] | None = None) -> Any:
        """Run ``reader`` on a Doc holding the integrated content and cache what it returns.

        ``doc`` is the writer's Doc when a mutator reads (it holds the same content);
        otherwise a private Doc is built and dropped. The cache holds plain Python data,
        never a Doc.
        """
        cache = self._cache
        if cache is None:
            if doc is None:
                doc = Doc()
                with _untrusted(self.TYPE_TAG):
                    doc.apply_update(self._update)
            with doc.transaction():  # joins the writer's transaction when there is one
                cache = self._cache = reader(doc)
        return cache

    def _write(self, actor: str, edit: Callable[[Doc[Any]], None]) -> Self:
        """Run ``edit`` as ``actor`` on a private Doc; return the delta (its Yjs update).

        No change, no delta: the empty state is returned.
        """
        client = yjs_client_id(actor)
        if any(client in _parse_update(p, self._ROOT).ranges for p in self._pending):
            raise ValueError(
                f"this state holds pending (not yet integrable) updates written by {actor!r}; "
                "mutate the writer's latest state, or join the missing updates first"
            )
        doc: Doc[Any] = Doc(client_id=client)
        with _untrusted(self.TYPE_TAG):
            doc.apply_update(self._update)
        captured: list[bytes] = []
        sub = doc.observe(lambda event: captured.append(event.update))
        try:
            with doc.new_transaction():
                edit(doc)
        finally:
            doc.unobserve(sub)
        if not captured:
            return type(self)()
        integrated, pending = _settle((), captured, self._ROOT, self.TYPE_TAG)
        return type(self)._make(integrated, pending)


# -- Document ----------------------------------------------------------------------------

_MAP_ENTRY = b"\x00"
_LEAF_TAG = 0x01

Path = tuple[str, ...]


def _path_of(path: Any) -> Path:
    if isinstance(path, str):
        if not path:
            raise ValueError("path is empty; pass a key such as 'model' or 'model.threshold'")
        keys = tuple(path.split("."))
        if any(not k for k in keys):
            raise ValueError(
                f"dotted path {path!r} has an empty key; pass a tuple of keys to use keys "
                "that contain dots or are empty"
            )
    elif isinstance(path, tuple):
        keys = path
        if not keys:
            raise ValueError("path is empty; the document root is always a map, set a key under it")
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"path keys must be str, got {type(k).__name__} in {path!r:.80}")
    else:
        raise TypeError(f"path must be a tuple of str keys or a dotted str, got {type(path).__name__}")
    if len(keys) > _MAX_PATH_DEPTH:
        raise ValueError(f"path is {len(keys)} keys deep; the limit is {_MAX_PATH_DEPTH}")
    for k in keys:
        _check_str(k)
    return keys


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"string {s!r:.40} is not valid Unicode (lone surrogate)") from None


def _check_value(v: Any, depth: int = 0) -> Any:
    """Validate a JSON-like value; return it with tuples as lists."""
    if depth > _MAX_VALUE_DEPTH:
        raise ValueError(f"value nests deeper than {_MAX_VALUE_DEPTH} levels")
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if not -(2**63) <= v < 2**64:
            raise ValueError(f"integer {v} does not fit in 64 bits; store it as a str")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"float {v!r} is not JSON; use None or a str for missing/infinite values")
        return v
    if isinstance(v, str):
        _check_str(v)
        return v
    if isinstance(v, (list, tuple)):
        return [_check_value(x, depth + 1) for x in v]
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be str, got {type(k).__name__} ({k!r:.40})")
            _check_str(k)
            out[k] = _check_value(x, depth + 1)
        return out
    raise TypeError(
        f"{type(v).__name__} cannot be stored in a Document; use None, bool, int, float, str, "
        "list or dict"
    )


def _key_of(path: Path) -> str:
    return json.dumps(list(path), ensure_ascii=False, separators=(",", ":"))


def _path_of_key(key: str) -> Path | None:
    """The path a Y.Map key encodes, or None if the key is not in canonical form."""
    try:
        keys = json.loads(key)
    except ValueError:
        return None
    if (not isinstance(keys, list) or not keys or len(keys) > _MAX_PATH_DEPTH
            or not all(isinstance(k, str) for k in keys)):
        return None
    path = tuple(keys)
    try:
        if _key_of(path) != key:
            return None
    except UnicodeError:
        return None
    return path


def _encode_leaf(v: Any) -> bytes:
    return bytes([_LEAF_TAG]) + packb(canonical(v))


def _decode_entry(raw: Any) -> bytes | None:
    """The entry bytes if they are a map marker or a valid leaf, else None."""
    if not isinstance(raw, (bytes, bytearray)):
        return None
    data = bytes(raw)
    if data == _MAP_ENTRY:
        return data
    if not data or data[0] != _LEAF_TAG:
        return None
    try:
        v = unpackb(data[1:], what="document leaf")
        # canonical only: exactly what _encode_leaf writes for a JSON-like non-dict value
        if isinstance(v, dict) or _encode_leaf(_check_value(v)) != data:
            return None
    except (CorruptRecord, TypeError, ValueError):
        return None
    return data


def _leaf_value(raw: bytes) -> Any:
    return unpackb(raw[1:], what="document leaf")


def _flatten(path: Path, value: Any, out: dict[Path, bytes]) -> None:
    if isinstance(value, dict):
        out[path] = _MAP_ENTRY
        for k, v in value.items():
            if len(path) + 1 > _MAX_PATH_DEPTH:
                raise ValueError(f"value nests past the path depth limit of {_MAX_PATH_DEPTH} keys")
            _flatten((*path, k), v, out)
    else:
        out[path] = _encode_leaf(value)


class _Entries:
    """Read cache of a Document: entry bytes by path, plus the paths in sorted order."""

    __slots__ = ("by_path", "order")

    def __init__(self, by_path: dict[Path, bytes]) -> None:
        self.by_path = by_path
        self.order = sorted(by_path)

    def under(self, path: Path) -> list[Path]:
        """Paths strictly below ``path`` (contiguous after it in tuple order)."""
        n = len(path)
        i = bisect.bisect_right(self.order, path)
        out = []
        while i < len(self.order) and self.order[i][:n] == path:
            out.append(self.order[i])
            i += 1
        return out


@register
class Document(_YState[dict[str, Any]]):
    """Concurrent writes to different paths all survive; concurrent writes to one key are won
    by Yjs's rule, the writer with the higher Yjs client id (:func:`yjs_client_id`), NOT the
    later time.

    A nested JSON-like configuration: ``value()`` is a dict of str keys whose values are
    None, bool, int, float, str, lists and nested dicts. ``set`` creates missing
    intermediate maps (replacing a non-map on the way) and replaces what was at the path;
    ``delete`` removes a key and everything below it. Concurrently: a write of a key beats
    a delete of it; a delete of a key hides writes below it (for good: a later ``set``
    through the key clears them); a leaf written over a map hides writes inside it; two
    dicts written to one key merge key by key (a dict is a map node plus one write per
    key). The
    client-id rule is exact when the competing writers saw the same value of the key; in
    longer concurrent chains Yjs's integration order decides (the same everywhere).

    Cost: Yjs keeps a tombstone for every overwritten or deleted entry, forever (about
    200 B each in a live Doc, a few bytes each in the encoding); nothing is reclaimed. Use
    it for rarely-overwritten nested configuration, not for hot values (use a register).

    Layout: one Yjs root map ``"doc"`` holds the document *flattened*: one entry per map
    node and per leaf, keyed by the path as a compact JSON array (``'["model","lr"]'``).
    Flattening is what lets concurrent writes under the same new intermediate key both
    survive (nested Yjs maps created concurrently would replace each other). An entry is
    a Yjs binary: ``b"\\x00"`` for a map node, or ``b"\\x01"`` + canonical msgpack of a
    non-dict value. This tagged encoding keeps ints ints (Yjs returns numbers as floats),
    bools bools and floats floats, exactly. A path is visible when every proper prefix is
    a map node; entries below a non-map (left by concurrent writes) are hidden. Payload:
    see the module docstring. The Yjs state vector is not crdtsync's lineage context.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "doc"
    MUTATORS: ClassVar[tuple[str, ...]] = ("set", "delete")
    _ROOT: ClassVar[str] = "doc"

    # -- reads -----------------------------------------------------------------------
    def _entries(self, doc: Doc[Any] | None = None) -> _Entries:
        def read(doc: Doc[Any]) -> _Entries:
            # str(map) is Yjs's JSON rendering (binary as a list of byte values): about
            # three times faster than converting entry by entry through Map.items().
            # Every update was validated against the layout before it reached the Doc
            # (_parse_update), so keys are JSON paths and values tagged entries.
            raw_map = json.loads(str(doc.get(self._ROOT, type=Map)))
            return _Entries({tuple(json.loads(key)): bytes(raw) for key, raw in raw_map.items()})

        entries = self._read(read, doc)
        assert isinstance(entries, _Entries)
        return entries

    def value(self) -> dict[str, Any]:
        """The document as a new nested dict (safe to modify)."""
        entries = self._entries()
        root: dict[str, Any] = {}
        maps: dict[Path, dict[str, Any]] = {(): root}
        for path in entries.order:  # parents sort before their children
            parent = maps.get(path[:-1])
            if parent is None:
                continue  # below a leaf or a missing node: hidden
            raw = entries.by_path[path]
            if raw == _MAP_ENTRY:
                child: dict[str, Any] = {}
                maps[path] = child
                parent[path[-1]] = child
            else:
                parent[path[-1]] = _leaf_value(raw)
        return root

    def get(self, path: DocumentPath, default: Any = None) -> Any:
        """The value at ``path`` (a new object), or ``default`` if it is absent."""
        keys = _path_of(path)
        node: Any = self.value()
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    # -- mutators --------------------------------------------------------------------
    def set(self, path: DocumentPath, value: Any, *, actor: str) -> Document:
        """Delta setting ``path`` to ``value`` (a dict becomes a nested map).

        Missing intermediate maps are created, and an intermediate that is not a map is
        replaced by one. Whatever was below ``path`` is removed first.
        """
        actor_of(actor)
        keys = _path_of(path)
        writes: dict[Path, bytes] = {}
        _flatten(keys, _check_value(value), writes)

        def edit(doc: Doc[Any]) -> None:
            entries = self._entries(doc)
            deletes: set[Path] = set()
            for i in range(1, len(keys)):
                prefix = keys[:i]
                if entries.by_path.get(prefix) != _MAP_ENTRY:
                    # a new map replaces what was there; clear leftovers below it
                    deletes.update(entries.under(prefix))
                    for j in range(i, len(keys)):
                        writes[keys[:j]] = _MAP_ENTRY
                    break
            deletes.update(entries.under(keys))
            deletes.difference_update(writes)
            self._edit_entries(doc, sorted(deletes), sorted(writes.items()))

        return self._write(actor, edit)

    def delete(self, path: DocumentPath, *, actor: str) -> Document:
        """Delta removing ``path`` and everything below it (no-op if absent)."""
        actor_of(actor)
        keys = _path_of(path)

        def edit(doc: Doc[Any]) -> None:
            entries = self._entries(doc)
            targets = entries.under(keys)
            if keys in entries.by_path:
                targets.insert(0, keys)
            self._edit_entries(doc, targets, [])

        return self._write(actor, edit)

    def _edit_entries(
        self, doc: Doc[Any], deletes: Sequence[Path], writes: Sequence[tuple[Path, bytes]]
    ) -> None:
        if not deletes and not writes:
            return
        root = doc.get(self._ROOT, type=Map)
        for path in deletes:
            del root[_key_of(path)]
        for path, raw in writes:
            root[_key_of(path)] = raw

    def __repr__(self) -> str:
        return f"Document({self.value()!r})"


# -- Text --------------------------------------------------------------------------------


def _check_index(n: Any, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}; count from the start of the text")
    return n


@register
class Text(_YState[str]):
    """Every concurrent insert survives and a character deleted by anyone stays deleted;
    concurrent inserts at one place are ordered by Yjs's rule (lower client id first), not time.

    Collaborative plain text (Yjs's YATA sequence). Indices are Python ``str`` indices
    (code points); they are converted to the UTF-8 byte offsets pycrdt uses, so an edit
    never lands inside a multi-byte character (which would corrupt the text).

    Cost: deleted characters leave tombstones (content dropped, a run of deletions shares
    one record), forever; nothing is reclaimed.

    Layout: one Yjs root text ``"text"`` holding plain characters (no formatting, no
    embeds). Payload: see the module docstring. The Yjs state vector is not crdtsync's
    lineage context.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "text"
    MUTATORS: ClassVar[tuple[str, ...]] = ("insert", "delete")
    _ROOT: ClassVar[str] = "text"

    def value(self) -> str:
        return self._text()

    def _text(self, doc: Doc[Any] | None = None) -> str:
        text = self._read(lambda d: str(d.get(self._ROOT, type=_YText)), doc)
        assert isinstance(text, str)
        return text

    def __len__(self) -> int:
        return len(self.value())

    def insert(self, index: int, text: str, *, actor: str) -> Text:
        """Delta inserting ``text`` before character ``index``.

        Like ``list.insert``, an index past the end appends.
        """
        actor_of(actor)
        _check_index(index, "index")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        _check_str(text)
        if not text:
            return Text()

        def edit(doc: Doc[Any]) -> None:
            current = self._text(doc)
            # pycrdt counts UTF-8 bytes; an offset inside a character would corrupt the text
            offset = len(current[:index].encode("utf-8"))
            doc.get(self._ROOT, type=_YText).insert(offset, text)

        return self._write(actor, edit)

    def delete(self, index: int, length: int, *, actor: str) -> Text:
        """Delta deleting up to ``length`` characters from ``index`` (fewer at the end)."""
        actor_of(actor)
        _check_index(index, "index")
        _check_index(length, "length")
        if not length:
            return Text()

        def edit(doc: Doc[Any]) -> None:
            current = self._text(doc)
            gone = current[index : index + length]
            if gone:
                start = len(current[:index].encode("utf-8"))
                del doc.get(self._ROOT, type=_YText)[start : start + len(gone.encode("utf-8"))]

        return self._write(actor, edit)

    def __repr__(self) -> str:
        return f"Text({self.value()!r})"

