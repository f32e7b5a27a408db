"""VectorPosition and the position helpers every consumer uses (covers, reached, earliest,
the wire form in snapshots), checked against their meaning for both kinds of position."""

from __future__ import annotations

import pytest

from crdtsync.clock import Context
from crdtsync.errors import CorruptRecord
from crdtsync.log._protocol import (
    VectorPosition,
    covers,
    earliest,
    format_position,
    position_from_wire,
    position_progress,
    position_to_wire,
    reached,
)
from crdtsync.snapshots import Snapshot, decode_snapshot, encode_snapshot


def rec(offsets: list[int], partition: int, generation: int = 0) -> VectorPosition:
    return VectorPosition(offsets, partition, generation)


def test_int_positions_keep_their_meaning() -> None:
    assert covers(5, 5) and covers(6, 5) and not covers(4, 5) and not covers(None, 0)
    assert reached(7, 7) and not reached(6, 7)
    assert earliest([9, 3, 4]) == 3
    assert position_to_wire(12) == 12 and position_from_wire(12) == 12 and position_from_wire(None) is None
    assert format_position(42) == "00000000000000000042"


def test_a_record_position_names_its_record() -> None:
    a = rec([3, 7, 0], 1)  # the record at offset 7 of partition 1, read after 3 of p0
    assert a.offset == 7 and a.after() == VectorPosition([3, 8, 0])
    assert a == rec([0, 7, 0], 1)  # equal: the same record, whatever else was read before
    assert hash(a) == hash(rec([0, 7, 0], 1))
    assert a != rec([3, 7, 0], 0) and a != VectorPosition([3, 7, 0])


def test_covers_is_about_records_read() -> None:
    at = rec([3, 7, 0], 1)
    assert covers(at, at)  # its own record
    assert covers(at, rec([0, 6, 0], 1)) and covers(at, rec([0, 0, 0], 0)) and covers(at, rec([2, 0, 0], 0))
    assert not covers(at, rec([3, 0, 0], 0))  # offset 3 of p0 is not read yet
    assert not covers(at, rec([0, 8, 0], 1)) and not covers(at, rec([0, 0, 0], 2))
    cursor = VectorPosition([3, 8, 0])
    assert covers(at, cursor) and covers(cursor, at) and not covers(at, VectorPosition([4, 8, 0]))
    with pytest.raises(TypeError):
        covers(3, at)
    with pytest.raises(ValueError):
        covers(at, rec([0, 0], 0))


def test_a_later_generation_covers_an_earlier_one_and_not_back() -> None:
    old = rec([100, 100, 100], 0, generation=0)
    new = rec([0, 0, 0], 2, generation=1)
    assert covers(new, old) and not covers(old, new)
    assert reached(new, VectorPosition([500, 500, 500], None, 0))


def test_reached_compares_a_record_with_an_end() -> None:
    end = VectorPosition([4, 2, 9])
    assert reached(rec([0, 2, 0], 1), end) and not reached(rec([0, 1, 0], 1), end)
    assert reached(rec([4, 0, 0], 0), end) and not reached(rec([3, 5, 5], 0), end)


def test_earliest_resumes_before_every_given_record() -> None:
    a, b = rec([5, 1, 2], 0), rec([3, 4, 2], 1)
    e = earliest([a, b])
    assert e == VectorPosition([3, 1, 2])
    for p in (a, b):
        assert not covers(e, p)  # their records are read again from e
    assert earliest([a, rec([0, 0, 0], 0, generation=1)]) == VectorPosition([5, 1, 2])  # oldest generation


def test_wire_form_round_trips_and_rejects_garbage() -> None:
    for p in (rec([1, 2, 3], 2, 4), VectorPosition([0, 9])):
        back = position_from_wire(position_to_wire(p))
        assert isinstance(back, VectorPosition)
        assert (back.offsets, back.partition, back.generation) == (p.offsets, p.partition, p.generation)
    for bad in ([[1, -1], None, 0], [[1], 3, 0], [["x"], None, 0], "pos", -4, [[1], None]):
        with pytest.raises(CorruptRecord):
            position_from_wire(bad)
    assert format_position(rec([1, 2, 3], 2, 4)) == "g4-p2-00000000000000000003"
    assert position_progress(rec([1, 2, 3], 2)) == 6


def test_snapshots_keep_a_vector_position() -> None:
    pos = rec([10, 20, 30], 1, 2)
    snap = Snapshot("a~1", Context(), pos, 5, 0, {})
    back = decode_snapshot(encode_snapshot(snap))
    assert isinstance(back.position, VectorPosition)
    assert back.position.offsets == (10, 20, 30) and back.position.generation == 2 and back.position == pos
    assert decode_snapshot(encode_snapshot(Snapshot("a~1", Context(), 77, 5, 0, {}))).position == 77
