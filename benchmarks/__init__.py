"""Benchmarks: commands that print figures (`make bench`), never timed tests."""

import sys
from pathlib import Path

# The benchmarks drive real processes with the integration tests' harness (tests/integration/harness.py).
_HARNESS = str(Path(__file__).resolve().parents[1] / "tests" / "integration")
if _HARNESS not in sys.path:
    sys.path.insert(0, _HARNESS)
