"""Entry point: python -m aftersales.metrics."""

from aftersales.metrics.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("metrics", Settings, build)


if __name__ == "__main__":
    main()
