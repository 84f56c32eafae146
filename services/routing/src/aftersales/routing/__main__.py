"""Entry point: python -m aftersales.routing."""

from aftersales.routing.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("routing", Settings, build)


if __name__ == "__main__":
    main()
