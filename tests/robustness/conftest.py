"""Hypothesis profiles for the property tests: ``ci`` (25 examples per test) by default,
``medium`` (1,000) and ``long`` (10,000) on request:
``pytest tests/robustness --hypothesis-profile=long``."""

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)
settings.register_profile("ci", max_examples=25, **_common)
settings.register_profile("medium", max_examples=1_000, **_common)
settings.register_profile("long", max_examples=10_000, **_common)
settings.load_profile("ci")
