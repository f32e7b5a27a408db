"""How much causal metadata a state carries, for tests that check it stays bounded.

Observed-remove types (:class:`~crdtsync.types.collections.ORSet`,
:class:`~crdtsync.types.collections.ORMap`) keep no tombstones: a state holds one dot
per live add or update, a version vector with one entry per writer, and a dot cloud
only while deltas arrive out of order (an ORMap whose values are causal types also
keeps one removal record per key, included in ``encoded_bytes``). :func:`metadata_size` measures exactly those
parts, so a test can assert that they depend on the live elements and the number of
replicas and not on how many adds and removes happened::

    from crdtsync.testing.metadata import metadata_size

    m = metadata_size(state)
    assert m.cloud_entries == 0 and m.vv_entries <= replicas
    assert m.dots <= replicas * m.live

Other types get a generic measure: the encoded size, the context's version vector and
dot cloud if the state has a ``context`` (flags, registers), and ``len(state)`` as the
live count if it has one.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Any

from ..clock import Context
from ..types._base import CRDT
from ..types.collections import ORMap, ORSet

__all__ = ["MetadataSize", "metadata_size"]


@dataclass(frozen=True)
class MetadataSize:
    """The metadata one state carries (all counts, all non-negative).

    Attributes:
        live: live elements (ORSet) or keys (ORMap); for other types ``len(state)`` if
            the state has a length, else 0.
        dots: dots held by the live elements or keys (one per concurrent adder of an
            element; one per writer of a key since its last observed remove); 0 for
            types that are not dot stores.
        max_dots: the most dots one element or key holds (0 when there is none).
        vv_entries: entries in the state's version vector (one per writer seen).
        cloud_entries: dots in the state's dot cloud (seen beyond a gap; 0 once every
            delta has arrived).
        encoded_bytes: ``len(state.encode())``, everything included.
        nested_bytes: ORMap only: the encoded sizes of the nested states held, summed
            over live dots (each dot holds a whole nested state); 0 otherwise.
        max_nested_bytes: ORMap only: the largest of those nested states; 0 otherwise.
        records: ORMap of causal values only: keys holding a removal record (what the
            key's superseded values had seen removed; a removed key keeps its record).
        record_vv_entries: the most version-vector entries in one record's context,
            nested records included (one per nested identity that wrote there).
        record_cloud_entries: dot-cloud entries over all records (0 once every delta
            has arrived).
        record_dots: live dots remembered by all records (dots that were live when the
            states holding them were superseded, until a record sees them removed).
        record_groups: elements or keys naming those dots, over all records (a record of
            a set or map lists its live dots under the element or key holding them).
    """

    live: int
    dots: int
    max_dots: int
    vv_entries: int
    cloud_entries: int
    encoded_bytes: int
    nested_bytes: int = 0
    max_nested_bytes: int = 0
    records: int = 0
    record_vv_entries: int = 0
    record_cloud_entries: int = 0
    record_dots: int = 0
    record_groups: int = 0

    @property
    def context_entries(self) -> int:
        """Version-vector entries plus dot-cloud entries."""
        return self.vv_entries + self.cloud_entries


def metadata_size(state: CRDT[Any]) -> MetadataSize:
    """Measure the causal metadata of ``state`` (see :class:`MetadataSize`).

    Costs one encode of the state plus a pass over its live dots, so call it at
    checkpoints rather than after every operation of a long run.
    """
    if isinstance(state, ORSet):
        return _orset_size(state)
    if isinstance(state, ORMap):
        return _ormap_size(state)
    if not isinstance(state, CRDT):
        raise TypeError(f"metadata_size needs a crdtsync state, got {type(state).__name__}")
    ctx = getattr(state, "context", None)
    vv, cloud = (len(ctx.vv), ctx.cloud_size()) if isinstance(ctx, Context) else (0, 0)
    live = len(state) if isinstance(state, Sized) else 0
    return MetadataSize(
        live=live, dots=0, max_dots=0, vv_entries=vv, cloud_entries=cloud, encoded_bytes=len(state.encode())
    )


# Both helpers read the dot stores directly: the public queries (dots_of, get) take an
# element and re-encode it, which would make a checkpoint cost far more than the state.


def _dot_store_size(counts: list[int], ctx: Context, encoded: bytes, **extra: int) -> MetadataSize:
    """Sizes shared by the dot stores: ``counts`` is the number of dots per live entry."""
    return MetadataSize(
        live=len(counts),
        dots=sum(counts),
        max_dots=max(counts, default=0),
        vv_entries=len(ctx.vv),
        cloud_entries=ctx.cloud_size(),
        encoded_bytes=len(encoded),
        **extra,
    )


def _orset_size(s: ORSet) -> MetadataSize:
    return _dot_store_size([len(ds) for ds in s._dots.values()], s.context, s.encode())


def _ormap_size(m: ORMap) -> MetadataSize:
    counts: list[int] = []
    nested: list[int] = []
    for fun in m._entries.values():
        counts.append(len(fun))
        nested.extend(len(e.state.encode()) for e in fun.values())
    vv = cloud = dots = groups = 0
    stack = list(m._resets.values())
    while stack:
        r = stack.pop()
        vv = max(vv, len(r.ctx.vv))
        cloud += len(r.ctx.cloud)
        dots += len(r.live)
        groups += len(r.by)
        stack.extend(r.children.values())
    return _dot_store_size(
        counts, m.context, m.encode(),
        nested_bytes=sum(nested),
        max_nested_bytes=max(nested, default=0),
        records=len(m._resets),
        record_vv_entries=vv,
        record_cloud_entries=cloud,
        record_dots=dots,
        record_groups=groups,
    )
