"""Hypothesis profiles of the fuzz suites (issue #15).

``meshhook-fuzz-ci`` (the default): 1,000 examples per test, derandomized and without an example database,
so every CI run tries the same inputs and a failure reproduces anywhere. ``MESHHOOK_SOAK=1`` selects
``meshhook-fuzz-soak``: ``MESHHOOK_SOAK_EXAMPLES`` (20,000) random examples per test from a seed printed in
the report header (``MESHHOOK_SOAK_SEED`` replays it).

The profiles are applied per test by :func:`fuzz` (never loaded globally: the other suites keep their own
Hypothesis settings). No deadline: the machine is shared, timing is not what these tests check.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, seed, settings

SOAK = os.environ.get("MESHHOOK_SOAK", "") == "1"
SOAK_EXAMPLES = int(os.environ.get("MESHHOOK_SOAK_EXAMPLES", "20000"))
SOAK_SEED = int(os.environ.get("MESHHOOK_SOAK_SEED") or random.SystemRandom().randrange(2**32))

_RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_BASE = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[*_RELAXED, HealthCheck.function_scoped_fixture],
    # no explain phase: it reruns a failure hundreds of times (minutes against a database)
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.register_profile("meshhook-fuzz-ci", parent=_BASE, max_examples=1000, derandomize=True)
settings.register_profile("meshhook-fuzz-soak", parent=_BASE, max_examples=SOAK_EXAMPLES, derandomize=False)
PROFILE = "meshhook-fuzz-soak" if SOAK else "meshhook-fuzz-ci"

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(max_examples: int | None = None) -> Callable[[F], F]:
    """The active profile (and in soak mode the printed seed) for one ``@given`` test.

    ``max_examples`` scales a suite that checks several inputs per example (still at least 1,000 inputs).
    """
    profile = settings.get_profile(PROFILE)

    def apply(test: F) -> F:
        examples = profile.max_examples if max_examples is None or SOAK else max_examples
        wrapped = settings(profile, max_examples=examples)(test)
        if SOAK:
            wrapped = seed(SOAK_SEED)(wrapped)
        return wrapped

    return apply


def pytest_report_header() -> str:
    if SOAK:
        return (
            f"fuzz: profile {PROFILE}, {SOAK_EXAMPLES} examples per test, seed {SOAK_SEED} "
            f"(replay: MESHHOOK_SOAK=1 MESHHOOK_SOAK_SEED={SOAK_SEED})"
        )
    return f"fuzz: profile {PROFILE} (derandomized, 1000 examples per test; MESHHOOK_SOAK=1 for more)"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The soak seed again at the end, where ``-q`` still shows it."""
    if SOAK:
        terminalreporter.write_line(
            f"fuzz soak seed: {SOAK_SEED} (replay with MESHHOOK_SOAK_SEED={SOAK_SEED})"
        )
