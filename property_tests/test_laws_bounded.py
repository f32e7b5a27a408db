"""Shared laws for the bounded counter (at the default bound 0 and at a negative bound)."""

import dataclasses

from crdtsync.testing import CRDTLaws, spec_for
from crdtsync.testing.specs.bounded import bcounter_model
from crdtsync.types.bounded import BoundedCounter


class TestBoundedCounterLaws(CRDTLaws):
    spec = spec_for(BoundedCounter)


class TestBoundedCounterOffsetLaws(CRDTLaws):
    spec = dataclasses.replace(
        spec_for(BoundedCounter),
        make=lambda: BoundedCounter(lower=-7),
        model=bcounter_model(-7),
        name="BoundedCounter(lower=-7)",
    )
