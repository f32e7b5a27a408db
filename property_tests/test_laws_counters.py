"""Shared laws for the counters."""

from crdtsync import GCounter, PNCounter
from crdtsync.testing import CRDTLaws, spec_for


class TestGCounterLaws(CRDTLaws):
    spec = spec_for(GCounter)


class TestPNCounterLaws(CRDTLaws):
    spec = spec_for(PNCounter)
