"""The replica's identity: kept in ``<data>/identity.json`` across restarts, a new
incarnation for a fresh directory, typed errors for a damaged file or a full disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crdtsync.errors import CorruptRecord, StorageFull
from crdtsync.replica.identity import ReplicaIdentity

from .._disk import SmallDisk


def test_the_actor_is_name_and_incarnation_and_each_new_identity_is_a_new_incarnation() -> None:
    a, b = ReplicaIdentity.new("edge", "eu", "pos"), ReplicaIdentity.new("edge")
    assert a.actor == f"edge~{a.incarnation}" and (a.region, a.role) == ("eu", "pos")
    assert (b.region, b.role) == ("default", "default")
    assert a.incarnation != b.incarnation


@pytest.mark.parametrize("bad", ["", "a~b"])
def test_a_name_must_be_non_empty_without_a_tilde(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid replica name"):
        ReplicaIdentity.new(bad)


def test_an_identity_survives_a_restart(tmp_path: Path) -> None:
    first = ReplicaIdentity.load_or_create(tmp_path, "edge", "eu", "pos")
    again = ReplicaIdentity.load_or_create(tmp_path, None, None, None)
    assert again == first
    assert json.loads((tmp_path / "identity.json").read_text())["incarnation"] == first.incarnation
    assert not (tmp_path / "identity.tmp").exists()


def test_a_fresh_directory_is_a_new_incarnation_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ReplicaIdentity.load_or_create(tmp_path / "a", "edge", None, None)
    other = ReplicaIdentity.load_or_create(tmp_path / "b", "edge", None, None)
    assert other.name == first.name and other.actor != first.actor, "lost state never reuses old dots"


def test_a_directory_of_another_replica_is_refused(tmp_path: Path) -> None:
    ReplicaIdentity.load_or_create(tmp_path, "edge", None, None)
    with pytest.raises(ValueError, match="belongs to replica 'edge'"):
        ReplicaIdentity.load_or_create(tmp_path, "cloud", None, None)


def test_a_new_region_or_role_is_kept_with_the_same_incarnation(tmp_path: Path) -> None:
    first = ReplicaIdentity.load_or_create(tmp_path, "edge", "eu", "pos")
    moved = ReplicaIdentity.load_or_create(tmp_path, None, "us", None)
    assert (moved.incarnation, moved.region, moved.role) == (first.incarnation, "us", "pos")
    assert ReplicaIdentity.load_or_create(tmp_path, None, None, None) == moved


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"name": "edge"}', b'{"name": 3, "incarnation": "x"}',
                                     b"\xff\xfe"])
def test_a_damaged_identity_file_is_a_typed_error_that_says_what_to_do(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "identity.json").write_bytes(content)
    with pytest.raises(CorruptRecord, match="identity.json"):
        ReplicaIdentity.load_or_create(tmp_path, "edge", None, None)


def test_creating_an_identity_on_a_full_disk_is_typed_and_leaves_no_partial_file(small_disk: SmallDisk) -> None:
    data = small_disk.path / "r"
    data.mkdir()
    small_disk.fill()
    with pytest.raises(StorageFull):
        ReplicaIdentity.load_or_create(data, "edge", None, None)
    assert small_disk.files("r/*") == [], "no identity.json or identity.tmp left"
    small_disk.free()
    created = ReplicaIdentity.load_or_create(data, "edge", None, None)
    assert ReplicaIdentity.load_or_create(data, None, None, None) == created
