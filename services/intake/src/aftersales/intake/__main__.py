"""Entry point: `python -m aftersales.intake`."""

from __future__ import annotations

from aftersales.intake.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("intake", Settings, build)


if __name__ == "__main__":
    main()
