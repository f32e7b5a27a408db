"""Control messages as a numbered stream per sender: deltas, with a periodic full one.

A heartbeat (or a hub's aggregate) is a *state*: named sections, each either a
:class:`~crdtsync.clock.Context` or a map of string keys to plain values. Sending the whole
state every time costs O(everything the sender knows): 25 bytes per writer ever seen in
a context. A :class:`StreamEncoder` instead numbers its messages and sends, in each, only
the entries that changed since the previous message, and every ``full_every`` messages
(or when asked) the whole state. A :class:`StreamDecoder` keeps, per sender, the last
state it rebuilt and its sequence number, and applies a delta **only on the exact base it
was computed against**: a delta whose base is not the held message (a gap: a lost
message, a restarted sender, a late joiner) is dropped and counted, and that sender is
listed in :attr:`StreamDecoder.resync` until its next full message arrives. The receiver
puts that list in its own next message (``want``), and a sender that sees
its name there sends a full message at once. The request travels in the message header
(``want``), readable even in a message whose delta cannot be applied: two replicas that
lost each other's streams (a healed partition) still hear each other's requests. So a receiver's view of a sender is always
a state the sender really had: convergence of membership views never rests on a guess.

Wire format (version 1), deterministic msgpack::

    ["ctlstream", 1, [kind: str, sender: str, epoch: int >= 0, seq: int >= 1,
                      base: int >= 0, want: [str], sections: [[name: str, set: list, dropped: [str]], ...]]]

``base`` is 0 for a full message (then ``dropped`` is empty and ``set`` holds the whole
section), else ``seq - 1``. ``want`` lists, sorted, the senders whose full message the sender asks
for. ``epoch`` identifies one run of the sender's encoder (a
restarted sender starts a new epoch with a full message). For a context section ``set``
is :meth:`Context.to_payload` rows of the replicas that changed and ``dropped`` the
replicas no longer in it; for a map section ``set`` is ``[[key, value], ...]`` sorted by
key and ``dropped`` the keys removed. Sections are sorted by name; a section absent from a
delta did not change. Bad input raises :class:`~crdtsync.errors.CorruptRecord`, a newer
version :class:`~crdtsync.errors.UnsupportedVersion`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._encoding import check_envelope, corrupt, packb, unpackb
from ..clock import Context
from ..errors import BadInput

__all__ = [
    "STREAM_TAG", "STREAM_VERSION", "Received", "Retained", "Section", "State", "StreamDecoder", "StreamEncoder",
    "StreamStats", "is_stream", "peek",
]

STREAM_TAG = "ctlstream"
STREAM_VERSION = 1

#: a section's value: a context, or a map of str keys to msgpack-able values
Section = Context | Mapping[str, Any]
#: a whole state: sections by name
State = Mapping[str, Section]


def is_stream(data: bytes) -> bool:
    """Whether ``data`` looks like a stream message (cheap prefix check, not validation)."""
    return STREAM_TAG.encode() in data[:16]


def _map_delta(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    changed = [[k, new[k]] for k in sorted(new) if k not in old or old[k] != new[k]]
    return changed, sorted(k for k in old if k not in new)


@dataclass
class StreamStats:
    """What a stream encoder or decoder did (bytes are exact, not estimates)."""

    fulls: int = 0
    deltas: int = 0
    bytes: int = 0
    gaps: int = 0  # decoder: deltas dropped because their base was not the held one
    stale: int = 0  # decoder: messages older than the held one (duplicates, reordering)


class StreamEncoder:
    """The sending side of one stream (one sender, one kind of message).

    Args:
        kind: what the stream carries (``"hb"`` heartbeats, ``"agg"`` hub aggregates).
        sender: the sending replica's name.
        epoch: identifies this run of the sender (e.g. its HLC time at start), so a
            restarted sender's fresh numbering is never taken for the old one's.
        full_every: a full message at least every this many messages (``>= 1``; 1:
            always full, as before deltas existed).
    """

    def __init__(self, kind: str, sender: str, epoch: int, *, full_every: int = 32) -> None:
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every}")
        self.kind, self.sender, self.epoch, self.full_every = kind, sender, epoch, full_every
        self.seq = 0
        self._last: dict[str, Section] | None = None
        self._since_full = 0
        self._want_full = True
        self.stats = StreamStats()

    @property
    def full_wanted(self) -> bool:
        """Whether the next message is full because one was asked for."""
        return self._want_full

    def request_full(self) -> None:
        """Send the next message in full (a receiver lost the thread)."""
        self._want_full = True

    def encode(self, state: State, want: set[str] | frozenset[str] = frozenset()) -> bytes:
        """The next message of the stream for ``state`` (a delta, or full when due);
        ``want``: senders whose stream this replica lost."""
        self.seq += 1
        full = self._want_full or self._last is None or self._since_full + 1 >= self.full_every
        sections: list[list[Any]] = []
        for name in sorted(state):
            value = state[name]
            if full:
                rows = value.to_payload() if isinstance(value, Context) else [[k, value[k]] for k in sorted(value)]
                sections.append([name, rows, []])
                continue
            assert self._last is not None
            old = self._last.get(name)
            if isinstance(value, Context):
                if old is value or old == value:
                    continue
                changed, dropped = value.row_delta(old if isinstance(old, Context) else Context())
            else:
                changed, dropped = _map_delta(value, old if isinstance(old, Mapping) else {})
            if changed or dropped:
                sections.append([name, changed, dropped])
        base = 0 if full else self.seq - 1
        data = packb([STREAM_TAG, STREAM_VERSION,
                      [self.kind, self.sender, self.epoch, self.seq, base, sorted(want), sections]])
        self._last = {k: (v if isinstance(v, Context) else dict(v)) for k, v in state.items()}
        if full:
            self._want_full, self._since_full = False, 0
            self.stats.fulls += 1
        else:
            self._since_full += 1
            self.stats.deltas += 1
        self.stats.bytes += len(data)
        return data


@dataclass(frozen=True)
class Received:
    """One decoded stream message: whose, which, what the sender asks for, and (when it
    could be applied) the sender's whole state."""

    kind: str
    sender: str
    seq: int
    full: bool
    #: the sender's state, ``None`` when the message was stale or its base not held
    state: dict[str, Section] | None
    want: frozenset[str]
    #: per section, the entries this message set (all of them in a full message)
    changed: dict[str, list[Any]]


@dataclass
class _Held:
    epoch: int
    seq: int
    state: dict[str, Section]


class StreamDecoder:
    """The receiving side: rebuilds every sender's state of the streams it hears.

    Args:
        schema: per kind, the sections a state has and their types (``Context`` or
            ``dict``); unknown sections in a message are refused as corrupt.
        validate: per kind, a check of a rebuilt state (``(sender, state)``, raising
            ``CorruptRecord``), run before the state is kept: a bad message never
            becomes the base of the next delta.
    """

    def __init__(self, schema: Mapping[str, Mapping[str, type]],
                 validate: Mapping[str, Callable[[str, dict[str, Any]], object]] | None = None) -> None:
        self.schema = schema
        self.validate = dict(validate or {})
        self._held: dict[tuple[str, str], _Held] = {}
        #: senders (by kind) whose stream has a gap: waiting for their next full message
        self.resync: dict[str, set[str]] = {k: set() for k in schema}
        self.stats = StreamStats()

    def forget(self, kind: str, sender: str) -> None:
        """Drop what is held of ``sender`` (removed from the fleet)."""
        self._held.pop((kind, sender), None)
        self.resync.get(kind, set()).discard(sender)

    def decode(self, data: bytes) -> Received:
        """Apply one message. Its ``state`` is ``None`` when the message is stale or a
        delta on a base not held (counted; the sender goes to :attr:`resync`). Bad bytes
        raise ``CorruptRecord``/``UnsupportedVersion`` and change nothing."""
        _, body = check_envelope(unpackb(data, what=STREAM_TAG), STREAM_TAG, STREAM_VERSION)
        if not (isinstance(body, list) and len(body) == 7):
            corrupt(STREAM_TAG, "expected a 7-field body")
        kind, sender, epoch, seq, base, want, sections = body
        if not (isinstance(want, list) and all(isinstance(w, str) for w in want)):
            corrupt(STREAM_TAG, "want must be a list of names")
        if kind not in self.schema:
            corrupt(STREAM_TAG, f"unknown stream kind {kind!r:.40}")
        if not isinstance(sender, str) or not sender:
            corrupt(STREAM_TAG, "sender must be a non-empty str")
        for what, v in (("epoch", epoch), ("seq", seq), ("base", base)):
            if type(v) is not int or v < 0:
                corrupt(STREAM_TAG, f"{what} must be a non-negative int")
        if seq < 1 or (base and base != seq - 1):
            corrupt(STREAM_TAG, f"base {base} does not precede seq {seq}")
        if not isinstance(sections, list):
            corrupt(STREAM_TAG, "sections must be a list")
        self.stats.bytes += len(data)
        key = (kind, sender)
        held = self._held.get(key)
        full = base == 0
        if held is not None and held.epoch == epoch and seq <= held.seq:
            self.stats.stale += 1
            return Received(kind, sender, seq, full, None, frozenset(want), {})
        if not full and (held is None or held.epoch != epoch or held.seq != base):
            self.stats.gaps += 1
            self.resync[kind].add(sender)
            return Received(kind, sender, seq, full, None, frozenset(want), {})
        state = self._apply(self.schema[kind], sections, None if full else held.state if held else None)
        check = self.validate.get(kind)
        if check is not None:
            check(sender, state)
        self._held[key] = _Held(epoch, seq, state)
        if full:
            self.stats.fulls += 1
            self.resync[kind].discard(sender)
        else:
            self.stats.deltas += 1
        changed = {sec[0]: sec[1] for sec in sections}
        return Received(kind, sender, seq, full, state, frozenset(want), changed)

    @staticmethod
    def _apply(types: Mapping[str, type], sections: list[Any], base: dict[str, Section] | None) -> dict[str, Section]:
        state: dict[str, Section] = (
            {n: (Context() if t is Context else {}) for n, t in types.items()} if base is None else dict(base)
        )
        last = None
        for sec in sections:
            if not (isinstance(sec, list) and len(sec) == 3 and isinstance(sec[0], str)):
                corrupt(STREAM_TAG, "a section is not [name, set, dropped]")
            name, changed, dropped = sec
            if last is not None and name <= last:
                corrupt(STREAM_TAG, "sections not sorted and unique")
            last = name
            t = types.get(name)
            if t is None:
                corrupt(STREAM_TAG, f"unknown section {name!r:.40}")
            if not (isinstance(dropped, list) and all(isinstance(k, str) for k in dropped)):
                corrupt(STREAM_TAG, f"{name}: dropped must be a list of str")
            if base is None and dropped:
                corrupt(STREAM_TAG, f"{name}: a full message drops nothing")
            old = state[name]
            if t is Context:
                assert isinstance(old, Context)
                state[name] = old.patch(changed, dropped, what=f"{STREAM_TAG} {name}")
            else:
                if not isinstance(changed, list):
                    corrupt(STREAM_TAG, f"{name}: set must be a list of pairs")
                assert not isinstance(old, Context)
                new = dict(old)
                prev = None
                for pair in changed:
                    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                        corrupt(STREAM_TAG, f"{name}: bad pair {pair!r:.60}")
                    if prev is not None and pair[0] <= prev:
                        corrupt(STREAM_TAG, f"{name}: keys not sorted and unique")
                    prev = pair[0]
                    new[pair[0]] = pair[1]
                for k in dropped:
                    new.pop(k, None)
                state[name] = new
        return state


def peek(data: bytes) -> tuple[str, int] | None:
    """``(sender, base)`` of a stream message (base 0: full), ``None`` if it is not one."""
    try:
        obj = unpackb(data, what=STREAM_TAG)
    except BadInput:
        return None
    if not (isinstance(obj, list) and len(obj) == 3 and obj[0] == STREAM_TAG and isinstance(obj[2], list)
            and len(obj[2]) == 7 and isinstance(obj[2][1], str) and type(obj[2][4]) is int):
        return None
    return obj[2][1], obj[2][4]


class Retained:
    """What a transport keeps for late subscribers of one topic: per sender, its last full
    message and every delta after it (so a joiner can rebuild each sender's state with
    no gap), or the last message when it is not a stream message (full heartbeats)."""

    def __init__(self) -> None:
        self._tail: dict[str, list[bytes]] = {}

    def add(self, sender: str, data: bytes) -> None:
        p = peek(data)
        if p is None or p[1] == 0:
            self._tail[sender] = [data]
        else:
            self._tail.setdefault(sender, []).append(data)

    def replay(self) -> list[tuple[str, bytes]]:
        """Every retained message, oldest first per sender."""
        return [(s, d) for s, tail in self._tail.items() for d in tail]
