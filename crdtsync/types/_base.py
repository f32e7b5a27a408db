"""The one protocol every crdtsync type follows, and the registry of types.

Every type is an immutable join-semilattice state with:

* **mutators** that return a *delta*: a small state of the same type which, joined into
  the state it was computed from, performs the mutation (``x.join(x.inc(actor=a))``).
  Mutators take their operation arguments positionally and the writer's identity as the
  keyword-only ``actor``; types whose order depends on time (``NEEDS_TIME``) also take
  ``ts``, a hybrid-logical-clock timestamp (see :mod:`crdtsync.clock`).
* ``join(other)``: commutative, associative, idempotent; pure (returns a new value or
  one of the operands, never mutates).
* ``value()``: what applications read.
* ``encode()`` / ``decode()``: tagged, versioned, deterministic msgpack::

      msgpack [type_tag: str, version: int, payload]

  ``payload`` is type specific and documented in each type's docstring. Maps are
  encoded as lists of pairs sorted by key; decoders validate everything and raise only
  :class:`~crdtsync.errors.CorruptRecord` or :class:`~crdtsync.errors.UnsupportedVersion`.

A new type is one module plus ``@register`` on its class; the shared law suite in
:mod:`crdtsync.testing` picks it up through its ``TypeSpec``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from .._encoding import check_envelope, corrupt, packb, unpackb
from ..clock import Dot
from ..errors import BadInput, CorruptRecord, IncompatibleState
from ._dots import Removals

__all__ = ["CRDT", "register", "registered_types", "type_for_tag", "decode_any"]

V = TypeVar("V")
S = TypeVar("S", bound="CRDT[Any]")


class CRDT(abc.ABC, Generic[V]):
    """Base class of every replicated data type.

    Subclasses set ``TYPE_TAG`` (stable wire name) and ``VERSION`` (payload format
    version), implement ``join``, ``value``, ``_payload`` and ``_from_payload``, and
    list their mutator method names in ``MUTATORS``.
    """

    __slots__ = ()

    TYPE_TAG: ClassVar[str]
    VERSION: ClassVar[int] = 1
    #: names of the methods that return deltas
    MUTATORS: ClassVar[tuple[str, ...]] = ()
    #: whether mutators take a ``ts`` (HLC timestamp) keyword
    NEEDS_TIME: ClassVar[bool] = False
    #: whether :meth:`_removals` returns a record (causal types: dot store plus context)
    RECORDS_REMOVALS: ClassVar[bool] = False

    @abc.abstractmethod
    def join(self: S, other: S) -> S:
        """The least upper bound of two states (pure)."""

    @abc.abstractmethod
    def value(self) -> V:
        """The value applications read."""

    @abc.abstractmethod
    def _payload(self) -> Any:
        """The msgpack-ready, deterministic payload of this state."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls: type[S], payload: Any, version: int) -> S:
        """Rebuild a state from a payload; raise ``CorruptRecord`` if it is malformed."""

    # -- shared machinery ------------------------------------------------------
    def params(self) -> Mapping[str, Any]:
        """Parameters fixed at creation (precision, bucket width...); equal for joinable states."""
        return {}

    def _check_joinable(self, other: Any) -> None:
        if type(other) is not type(self):
            raise IncompatibleState(
                f"cannot join {type(self).__name__} with {type(other).__name__}"
            )
        if self.params() != other.params():
            raise IncompatibleState(
                f"cannot join {type(self).__name__} states with different parameters "
                f"{dict(self.params())} and {dict(other.params())}"
            )

    def encode(self) -> bytes:
        """Tagged, versioned, deterministic bytes of this state."""
        return packb([self.TYPE_TAG, self.VERSION, self._payload()])

    @classmethod
    def decode(cls: type[S], data: bytes) -> S:
        """Rebuild a state from :meth:`encode` output.

        Raises :class:`CorruptRecord` for malformed bytes and :class:`UnsupportedVersion`
        for a newer format version.
        """
        version, payload = check_envelope(unpackb(data, what=cls.TYPE_TAG), cls.TYPE_TAG, cls.VERSION)
        return cls._decode_payload(payload, version)

    @classmethod
    def _decode_payload(cls: type[S], payload: Any, version: int) -> S:
        try:
            return cls._from_payload(payload, version)
        except BadInput:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise CorruptRecord(f"{cls.TYPE_TAG}: malformed payload ({type(exc).__name__}: {exc})") from None

    # -- removal records (causal types nested in an ORMap; see _dots.Removals) ------
    def _removals(self) -> Removals | None:
        """What this state has seen removed, or ``None`` for a type that records no removals.

        Causal types (a dot store plus a context) return their context and live dots;
        an ORMap that holds them carries these records so that a remove of a key never
        brings back what an earlier remove inside the key's value took away.
        """
        return None

    def _forget(self: S, removals: Removals) -> S:
        """This state without the live parts that ``removals`` records as removed."""
        return self

    def _seen(self: S, record: Removals, actor: str) -> S:
        """This state knowing every dot of ``actor`` that ``record`` has seen, and (for
        containers) every removal ``record`` holds for nested keys; live dots unchanged.

        A container calls it before a writer's nested write, so that the write takes the
        writer's next dot after every one it made before, even those only the removal
        record remembers; the writer's earlier dots this state does not hold count as
        seen and removed from now on. Only causal types (those whose :meth:`_removals` is not ``None``) implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a causal type")

    @staticmethod
    def _recalls(op_name: str, args: tuple[Any, ...], record: Removals) -> frozenset[Dot]:
        """The dots of ``record`` that the mutator ``op_name(*args)`` removes as well, when
        a container writes it into a key whose removal record is ``record``: the live
        dots the record lists under the element or key a remove names (containers only;
        none for other types)."""
        return frozenset()

    # -- column forms (batch format 2; optional fast paths for hot types) ---------
    @classmethod
    def _payloads(cls, states: Sequence[CRDT[Any]]) -> list[Any]:
        """The payloads of many states of this type (a type may override it to be faster)."""
        return [s._payload() for s in states]

    @classmethod
    def _columns(cls, payloads: list[Any], version: int) -> Any:
        """Validate many delta payloads at once into a column form, or return ``None``.

        ``None`` (the default, and the answer for payloads not in the type's common delta
        shape) makes the caller decode each payload with :meth:`_decode_payload`. A type
        that returns a column form must accept exactly what :meth:`_decode_payload`
        accepts for those payloads, and implement :meth:`_from_columns` and
        :meth:`_join_columns`.
        """
        return None

    #: the delta version, beyond :attr:`VERSION`, of this type's *stamped* payloads (None:
    #: it has none). Only batch format 2 carries them, as a group's delta version: each
    #: payload is what the writer's own delta is made of, the rest comes from the event
    #: (see :meth:`_stamped_columns`). A reader without the form sees an unsupported
    #: delta version, never a misread payload.
    STAMPED_VERSION: ClassVar[int | None] = None
    #: whether :meth:`_stamped_columns` reads the event stamps (False: the decoder passes
    #: None and does not build the stamp column for it)
    STAMPED_NEEDS_HLCS: ClassVar[bool] = True

    @classmethod
    def _stamped_columns(cls, payloads: list[Any], hlcs: list[int] | None, origin: str) -> Any:
        """The column form (as :meth:`_columns`) of stamped payloads written by ``origin``
        with event stamps ``hlcs`` (None for a type whose :attr:`STAMPED_NEEDS_HLCS` is
        False), validated; ``None`` if any payload is malformed."""
        raise NotImplementedError

    @classmethod
    def _from_columns(cls, cols: Any) -> list[Any]:
        """The delta states of a column form, in order."""
        raise NotImplementedError

    @classmethod
    def _join_columns(cls, table: MutableMapping[str, CRDT[Any]], keys: list[str], cols: Any,
                      start: int) -> tuple[int, list[int]]:
        """Join deltas ``start..`` of a column form into ``table`` at ``keys``.

        Exactly ``table[k] = d if table.get(k) is None else table[k].join(d)`` per delta,
        without building the delta objects. Returns how many were joined and the indices
        of those refused because the table holds a state of another type there.
        """
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(self._payload() == other._payload())  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r})"


_REGISTRY: dict[str, type[CRDT[Any]]] = {}


def register(cls: type[S]) -> type[S]:
    """Class decorator adding a type to the registry under its ``TYPE_TAG``."""
    tag = cls.TYPE_TAG
    existing = _REGISTRY.get(tag)
    if existing is not None and existing is not cls:
        raise ValueError(f"type tag {tag!r} already registered by {existing.__qualname__}")
    _REGISTRY[tag] = cls
    return cls


def registered_types() -> Mapping[str, type[CRDT[Any]]]:
    """Every registered type, by tag."""
    return dict(_REGISTRY)


def type_for_tag(tag: str) -> type[CRDT[Any]]:
    try:
        return _REGISTRY[tag]
    except (KeyError, TypeError):
        raise CorruptRecord(
            f"unknown type tag {tag!r}; the writer may use a newer crdtsync or a custom type "
            "this process has not imported"
        ) from None


def decode_any(data: bytes) -> CRDT[Any]:
    """Decode any registered type from its :meth:`CRDT.encode` bytes."""
    obj = unpackb(data, what="state")
    if not isinstance(obj, list) or len(obj) != 3 or not isinstance(obj[0], str):
        corrupt("state", "expected a [tag, version, payload] envelope")
    cls = type_for_tag(obj[0])
    version, payload = check_envelope(obj, cls.TYPE_TAG, cls.VERSION)
    return cls._decode_payload(payload, version)


def encode_nested(state: CRDT[Any]) -> list[Any]:
    """A nested state as ``[tag, version, payload]`` (for containers such as ORMap)."""
    return [state.TYPE_TAG, state.VERSION, state._payload()]


def decode_nested(obj: Any) -> CRDT[Any]:
    if not isinstance(obj, list) or len(obj) != 3 or not isinstance(obj[0], str):
        corrupt("nested state", "expected [tag, version, payload]")
    cls = type_for_tag(obj[0])
    version, payload = check_envelope(obj, cls.TYPE_TAG, cls.VERSION)
    return cls._decode_payload(payload, version)


def actor_of(actor: Any) -> str:
    """Validate an actor (replica) id."""
    if not isinstance(actor, str) or not actor:
        raise TypeError(f"actor must be a non-empty str (the replica id), got {actor!r}")
    return actor


def want_int(x: Any, what: str, *, minimum: int | None = None) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        corrupt(what, f"expected an int, got {type(x).__name__}")
    if minimum is not None and x < minimum:
        corrupt(what, f"{x} is below {minimum}")
    return x


def want_list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        corrupt(what, f"expected a list, got {type(x).__name__}")
    return x


def want_str(x: Any, what: str) -> str:
    if not isinstance(x, str):
        corrupt(what, f"expected a str, got {type(x).__name__}")
    return x


def check_sorted_unique(keys: list[Any], what: str) -> None:
    """Deterministic encodings list map entries in strictly ascending key order."""
    for a, b in zip(keys, keys[1:]):
        if not a < b:
            corrupt(what, "entries are not in strictly ascending order")
