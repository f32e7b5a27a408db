"""Shared laws for the registers and VectorRegister."""

import pytest

from crdtsync.testing import CRDTLaws, spec_for
from crdtsync.types.registers import LWWRegister, MaxRegister, MinRegister, MVRegister


class TestLWWRegisterLaws(CRDTLaws):
    spec = spec_for(LWWRegister)


class TestMVRegisterLaws(CRDTLaws):
    spec = spec_for(MVRegister)


class TestMaxRegisterLaws(CRDTLaws):
    spec = spec_for(MaxRegister)


class TestMinRegisterLaws(CRDTLaws):
    spec = spec_for(MinRegister)


try:
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover - the testing extra brings numpy
    pass
else:
    from crdtsync.types.vectors import VectorRegister

    class TestVectorRegisterLaws(CRDTLaws):
        spec = spec_for(VectorRegister)


def test_every_register_has_a_spec():
    pytest.importorskip("numpy")
    from crdtsync.types.vectors import VectorRegister

    for cls in (LWWRegister, MVRegister, MaxRegister, MinRegister, VectorRegister):
        assert spec_for(cls).model is not None
