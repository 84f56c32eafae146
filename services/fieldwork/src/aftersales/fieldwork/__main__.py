"""Entry point: `python -m aftersales.fieldwork` or `aftersales-fieldwork`."""

from aftersales.fieldwork.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("fieldwork", Settings, build)


if __name__ == "__main__":
    main()
