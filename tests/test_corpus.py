"""Inputs that once broke a decoder stay in tests/corpus/ and must keep raising typed errors.

Each file is ``<decoder>-<name>.bin``; ``decoder`` is one of: state (any CRDT),
batch (msgpack event batch), context, snapshot. Add a file whenever a fuzz or a user
finds a crash; the test needs no change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync.clock import Context
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import MsgpackCodec
from crdtsync.snapshots import decode_snapshot
from crdtsync.types import decode_any

CORPUS = Path(__file__).parent / "corpus"
DECODERS = {
    "state": decode_any,
    "batch": MsgpackCodec().decode,
    "context": Context.decode,
    "snapshot": decode_snapshot,
}
FILES = sorted(CORPUS.glob("*.bin"))


def test_corpus_is_not_empty():
    assert FILES and {f.name.split("-", 1)[0] for f in FILES} == set(DECODERS)


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_corpus_input_raises_a_typed_error(path):
    decoder = DECODERS[path.name.split("-", 1)[0]]
    with pytest.raises((CorruptRecord, UnsupportedVersion)):
        decoder(path.read_bytes())
