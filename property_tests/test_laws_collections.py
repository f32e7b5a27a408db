"""Shared laws for the collections: ORSet, ORMap of PNCounter, and maps nested two deep."""

from crdtsync.testing import CRDTLaws, spec_for
from crdtsync.testing.specs.collections import ORMAP_OF_ORMAP_OF_ORSET
from crdtsync.types.collections import ORMap, ORSet


class TestORSetLaws(CRDTLaws):
    spec = spec_for(ORSet)


class TestORMapLaws(CRDTLaws):
    spec = spec_for(ORMap)


class TestNestedORMapLaws(CRDTLaws):
    spec = ORMAP_OF_ORMAP_OF_ORSET
