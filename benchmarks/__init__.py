"""Benchmarks: commands that print figures (`make bench`), never timed tests."""

import sys
from pathlib import Path

# The benchmarks drive real processes with the integration tests' harness (tests/integration/harness.py).
# Routing's demo calendar comes from the demo data in deploy/local/routing_demo.py.
_ROOT = Path(__file__).resolve().parents[1]
for _path in (str(_ROOT / "tests" / "integration"), str(_ROOT / "deploy" / "local")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
