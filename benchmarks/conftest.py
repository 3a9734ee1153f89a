"""pytest setup for the benchmarks (not part of the test suite, whose testpaths is tests/).

Run from the repository root::

    pytest benchmarks/ --benchmark-only -p no:cacheprovider

The files are named ``bench_*.py`` so the suite never collects them; this conftest adds that
pattern when the benchmarks folder itself is collected.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("python_files", "bench_*.py")
