"""Queuey's trial tests (``make test``).

Hypothesis runs without its per-example deadline and its too-slow health
check: the suite shares a loaded machine, where a slow example is the
machine's doing, not the code's. Failures print the blob that replays them.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("queuey", deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          print_blob=True)
settings.load_profile("queuey")
