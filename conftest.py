"""Hypothesis profiles shared by tests/ and property_tests/.

``ci`` (the default): at least 200 examples per law per type. ``nightly``: ten times
more. ``dev``: quick local iteration. Pick one with ``HYPOTHESIS_PROFILE=nightly``.
"""

import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=200, print_blob=True, **_common)
settings.register_profile("nightly", max_examples=2_000, print_blob=True, **_common)
settings.register_profile("dev", max_examples=30, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
