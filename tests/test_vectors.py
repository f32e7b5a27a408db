"""Golden vectors freeze every type's wire format (CONVENTIONS.md, encoding rule 4).

A failure here means the bytes a type writes changed. If that was deliberate, bump the
type's VERSION, keep decoding the old version, and regenerate with
``python -m tests.vectors.regen``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import crdtsync
from crdtsync.types import decode_any, registered_types
from tests.vectors.cases import all_cases
from tests.vectors.regen import value_repr

HERE = Path(__file__).parent / "vectors"
CASES = all_cases()


def _frozen(tag: str) -> dict:
    path = HERE / f"{tag}.json"
    assert path.exists(), f"no golden vectors for {tag}; run python -m tests.vectors.regen"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name,builder", CASES, ids=[c[0] for c in CASES])
def test_vector_is_frozen(name, builder):
    state = builder()
    frozen = _frozen(state.TYPE_TAG)
    assert frozen["version"] == state.VERSION
    case = frozen["cases"][name]
    assert state.encode().hex() == case["hex"], "wire format changed: bump VERSION and regenerate"
    decoded = decode_any(bytes.fromhex(case["hex"]))
    assert decoded == state
    assert value_repr(decoded.value()) == case["value"]


def test_every_exported_type_has_vectors():
    covered = {name.split("/")[0] for name, _ in CASES}
    exported = {cls.TYPE_TAG for cls in registered_types().values() if cls.__name__ in crdtsync.__all__}
    assert exported <= covered, f"types without golden vectors: {sorted(exported - covered)}"


@pytest.mark.parametrize("tag", ["ormap"])
def test_older_format_versions_still_decode(tag):
    """The vectors of a type's previous format version (``<tag>.v<N>.json``) still decode
    to the values they were written with, and re-encode in the current version."""
    for path in sorted(HERE.glob(f"{tag}.v*.json")):
        old = json.loads(path.read_text())
        cls = registered_types()[tag]
        assert old["version"] < cls.VERSION, f"{path.name} is not an older version"
        for name, case in old["cases"].items():
            state = decode_any(bytes.fromhex(case["hex"]))
            assert value_repr(state.value()) == case["value"], name
            assert decode_any(state.encode()) == state, name
